// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Memory pressure: time every direct reclaim (a task that wanted memory had to
 * free some itself, i.e. it stalled) and every memory-cgroup reclaim. Totals
 * stay in the kernel; a stall longer than the trigger level is reported.
 * Complements PSI, which says how much time was lost but not when or by whom.
 */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define MEMCG_FLAG (1U << 31)

/* tid -> reclaim start (ns) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} starts SEC(".maps");

static __always_inline int begin(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 now = bpf_ktime_get_ns();

	bpf_map_update_elem(&starts, &tid, &now, BPF_ANY);
	return 0;
}

static __always_inline int end(__u32 flag)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *start, *total, *count, *last, now, took;
	__s64 trigger;

	/* 1. how long this reclaim took */
	start = bpf_map_lookup_elem(&starts, &tid);
	if (!start)
		return 0;
	now = bpf_ktime_get_ns();
	took = now - *start;
	bpf_map_delete_elem(&starts, &tid);

	/* 2. totals for userspace to read */
	total = state_slot(ST_STALL_NS);
	count = state_slot(ST_STALLS);
	if (total)
		__sync_fetch_and_add(total, took);
	if (count)
		__sync_fetch_and_add(count, 1);

	/* 3. a long stall is a trigger (rate-limited: stalls come in bursts) */
	trigger = (__s64)config_get(CFG_TRIGGER);
	if (trigger <= 0 || (__s64)took < trigger)
		return 0;
	last = state_slot(ST_LAST_TRIGGER);
	if (last && claim_slot(last, config_get(CFG_MIN_GAP_NS), now))
		emit(EV_TRIGGER, M_RECLAIM_STALL, (__s64)took, trigger, 0, 0, tid | flag, now);
	return 0;
}

SEC("tp/vmscan/mm_vmscan_direct_reclaim_begin")
int direct_reclaim_begin(void *ctx)
{
	return begin();
}

SEC("tp/vmscan/mm_vmscan_direct_reclaim_end")
int direct_reclaim_end(void *ctx)
{
	return end(0);
}

SEC("tp/vmscan/mm_vmscan_memcg_reclaim_begin")
int memcg_reclaim_begin(void *ctx)
{
	return begin();
}

SEC("tp/vmscan/mm_vmscan_memcg_reclaim_end")
int memcg_reclaim_end(void *ctx)
{
	return end(MEMCG_FLAG);
}
