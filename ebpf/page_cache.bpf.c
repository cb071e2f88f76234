// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Page cache: keep the number of page-cache pages in the kernel and tell
 * userspace only when it crosses the trigger level (or falls below the clear
 * level), plus a rate-limited sample.
 *
 * filemap:mm_filemap_add_to_page_cache / mm_filemap_delete_from_page_cache fire
 * once per folio; a folio holds 1 << order pages.
 */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Per (device, inode) pages added minus removed since load: "who filled the cache". */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct file_key);
	__type(value, __s64);
} files SEC(".maps");

/*
 * Devices to ignore: shmem (tmpfs, memfd, SysV shm). Shmem insertions do not pass through
 * this tracepoint but shmem truncations do, and meminfo counts shmem apart (Shmem), so
 * counting them would drift the figure we reconcile with (Cached - Shmem). Userspace fills
 * this from /proc/self/mountinfo and a memfd's st_dev.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} skip_devs SEC(".maps");

static __always_inline void account_file(__u32 dev, __u64 ino, __s64 pages)
{
	struct file_key key = { .ino = ino, .dev = dev, .pad = 0 };
	__s64 *cur;

	cur = bpf_map_lookup_elem(&files, &key);
	if (cur) {
		__sync_fetch_and_add(cur, pages);
		return;
	}
	/* Pages cached before we loaded are not ours to subtract. */
	if (pages > 0)
		bpf_map_update_elem(&files, &key, &pages, BPF_NOEXIST);
}

static __always_inline int on_change(struct trace_event_raw_mm_filemap_op_page_cache *ctx, __s64 sign)
{
	__u64 *delta, *base, *above, *last;
	__s64 pages, total, trigger, clear;
	__u32 dev = ctx->s_dev;
	__u64 ino = ctx->i_ino;
	__u64 now;

	if (bpf_map_lookup_elem(&skip_devs, &dev))
		return 0;
	pages = (__s64)(1ULL << (ctx->order & 31)) * sign;

	/* 1. global count: base (seeded by userspace) + delta (ours, atomic) */
	delta = state_slot(ST_DELTA);
	base = state_slot(ST_BASE);
	above = state_slot(ST_ABOVE);
	if (!delta || !base || !above)
		return 0;
	total = (__s64)*base + (__s64)__sync_fetch_and_add(delta, pages) + pages;

	/* 2. per-file contributors */
	account_file(dev, ino, pages);

	trigger = (__s64)config_get(CFG_TRIGGER);
	if (trigger <= 0)
		return 0;
	clear = (__s64)config_get(CFG_CLEAR);
	now = bpf_ktime_get_ns();

	/* 3. crossings, with hysteresis: only one CPU wins the state flip */
	if (total >= trigger && *above == 0) {
		if (__sync_val_compare_and_swap(above, 0, 1) != 0)
			return 0;
		last = state_slot(ST_LAST_TRIGGER);
		if (last && claim_slot(last, config_get(CFG_MIN_GAP_NS), now))
			emit(EV_TRIGGER, M_PAGE_CACHE, total, trigger, dev, ino, 0, now);
		return 0;
	}
	if (total < clear && *above == 1) {
		if (__sync_val_compare_and_swap(above, 1, 0) == 1)
			emit(EV_CLEAR, M_PAGE_CACHE, total, clear, dev, ino, 0, now);
		return 0;
	}

	/* 4. otherwise a sample, at most one per CFG_SAMPLE_NS */
	last = state_slot(ST_LAST_SAMPLE);
	if (last && config_get(CFG_SAMPLE_NS) && claim_slot(last, config_get(CFG_SAMPLE_NS), now))
		emit(EV_SAMPLE, M_PAGE_CACHE, total, trigger, dev, ino, 0, now);
	return 0;
}

SEC("tp/filemap/mm_filemap_add_to_page_cache")
int page_cache_add(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	return on_change(ctx, 1);
}

SEC("tp/filemap/mm_filemap_delete_from_page_cache")
int page_cache_delete(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	return on_change(ctx, -1);
}
