/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Shared between the eBPF programs in this folder and monitor-probe
 * (monitor-probe/src/event.rs mirrors struct monitor_event byte for byte,
 * and monitor-probe/src/ebpf.rs mirrors the map indices).
 */
#ifndef MONITOR_H
#define MONITOR_H

/* enum monitor_kind: what a ring-buffer record says. */
#define EV_SAMPLE 0  /* rate-limited current value, no crossing */
#define EV_TRIGGER 1 /* value crossed the trigger level upwards */
#define EV_CLEAR 2   /* value fell below the clear (hysteresis) level */

/* enum monitor_metric */
#define M_PAGE_CACHE 0    /* value: pages (4 KiB) */
#define M_TEMPERATURE 1   /* value: millidegrees Celsius */
#define M_RECLAIM_STALL 2 /* value: nanoseconds one reclaim took */

/* One ring-buffer record: 48 bytes, little endian, no padding holes. */
struct monitor_event {
	__u64 ts_ns;     /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__s64 value;     /* see enum monitor_metric */
	__s64 threshold; /* the level that was crossed (trigger or clear) */
	__u64 ino;       /* page cache: inode that caused the crossing */
	__u32 kind;      /* EV_* */
	__u32 metric;    /* M_* */
	__u32 dev;       /* page cache: kernel dev_t (major << 20 | minor) */
	__u32 id;        /* thermal: zone id; reclaim: tid; 1 << 31 set for memcg reclaim */
};

/* Key of the per-file page-cache contributor map (16 bytes). */
struct file_key {
	__u64 ino;
	__u32 dev;
	__u32 pad;
};

/*
 * Config arrays (BPF_MAP_TYPE_ARRAY of __u64, written by userspace before and
 * while the programs run). A trigger level of 0 disables the comparison.
 */
#define CFG_TRIGGER 0   /* page cache: pages; thermal: millidegrees; reclaim: ns */
#define CFG_CLEAR 1     /* hysteresis: fall below this to re-arm (unused by reclaim) */
#define CFG_MIN_GAP_NS 2 /* at most one trigger record per this many ns */
#define CFG_SAMPLE_NS 3 /* at most one sample record per this many ns (0: none) */
#define CFG_MAX 4

/* State arrays (BPF_MAP_TYPE_ARRAY of __u64). */
#define ST_DELTA 0       /* page cache: pages added minus removed since load (signed) */
#define ST_BASE 1        /* page cache: userspace seed (meminfo Cached - Shmem) minus delta at seed time */
#define ST_ABOVE 2       /* 1 while above the trigger level (until below the clear level) */
#define ST_LAST_TRIGGER 3
#define ST_LAST_SAMPLE 4
#define ST_DROPPED 5     /* ring buffer full: records lost */
#define ST_STALL_NS 6    /* reclaim: total stall ns */
#define ST_STALLS 7      /* reclaim: number of stalls */
#define ST_MAX 8

#endif
