// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Thermal: compare every thermal-zone temperature update with the trigger
 * level in the kernel; tell userspace on crossings and in rate-limited samples.
 */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct zone_state {
	__u64 above;
	__u64 last_trigger;
	__u64 last_sample;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __s32);
	__type(value, struct zone_state);
} zones SEC(".maps");

SEC("tp/thermal/thermal_temperature")
int thermal_temperature(struct trace_event_raw_thermal_temperature *ctx)
{
	struct zone_state zero = {}, *zs;
	__s32 id = ctx->id;
	__s64 temp = ctx->temp, trigger, clear;
	__u64 now = bpf_ktime_get_ns();

	/* 1. per-zone state, created on first sight */
	zs = bpf_map_lookup_elem(&zones, &id);
	if (!zs) {
		bpf_map_update_elem(&zones, &id, &zero, BPF_NOEXIST);
		zs = bpf_map_lookup_elem(&zones, &id);
		if (!zs)
			return 0;
	}

	trigger = (__s64)config_get(CFG_TRIGGER);
	clear = (__s64)config_get(CFG_CLEAR);

	/* 2. crossings with hysteresis */
	if (trigger > 0 && temp >= trigger && zs->above == 0) {
		if (__sync_val_compare_and_swap(&zs->above, 0, 1) == 0 &&
		    claim_slot(&zs->last_trigger, config_get(CFG_MIN_GAP_NS), now))
			emit(EV_TRIGGER, M_TEMPERATURE, temp, trigger, 0, 0, (__u32)id, now);
		return 0;
	}
	if (trigger > 0 && temp < clear && zs->above == 1) {
		if (__sync_val_compare_and_swap(&zs->above, 1, 0) == 1)
			emit(EV_CLEAR, M_TEMPERATURE, temp, clear, 0, 0, (__u32)id, now);
		return 0;
	}

	/* 3. rate-limited sample per zone */
	if (config_get(CFG_SAMPLE_NS) && claim_slot(&zs->last_sample, config_get(CFG_SAMPLE_NS), now))
		emit(EV_SAMPLE, M_TEMPERATURE, temp, trigger, 0, 0, (__u32)id, now);
	return 0;
}
