/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* Maps and helpers every monitor program uses: one ring buffer, config, state. */
#ifndef COMMON_BPF_H
#define COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "monitor.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CFG_MAX);
	__type(key, __u32);
	__type(value, __u64);
} mon_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ST_MAX);
	__type(key, __u32);
	__type(value, __u64);
} mon_state SEC(".maps");

static __always_inline __u64 *state_slot(__u32 idx)
{
	return bpf_map_lookup_elem(&mon_state, &idx);
}

static __always_inline __u64 config_get(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&mon_config, &idx);

	return v ? *v : 0;
}

/* Reserve, fill, submit. Crossings wake the reader at once; samples may wait. */
static __always_inline void emit(__u32 kind, __u32 metric, __s64 value, __s64 threshold,
				 __u32 dev, __u64 ino, __u32 id, __u64 now)
{
	struct monitor_event *e;
	__u64 *dropped;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		dropped = state_slot(ST_DROPPED);
		if (dropped)
			__sync_fetch_and_add(dropped, 1);
		return;
	}
	e->ts_ns = now;
	e->value = value;
	e->threshold = threshold;
	e->ino = ino;
	e->kind = kind;
	e->metric = metric;
	e->dev = dev;
	e->id = id;
	bpf_ringbuf_submit(e, kind == EV_SAMPLE ? 0 : BPF_RB_FORCE_WAKEUP);
}

/* Claim the right to emit a rate-limited record: true for exactly one caller per gap. */
static __always_inline bool claim_slot(__u64 *last, __u64 gap, __u64 now)
{
	__u64 prev = *last;

	if (prev != 0 && now - prev < gap)
		return false;
	return __sync_val_compare_and_swap(last, prev, now) == prev;
}

#endif
