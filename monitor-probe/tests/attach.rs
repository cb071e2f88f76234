//! Every program is loaded and attached to its tracepoint, through BPF links the process owns.
use crate::util::*;
use monitor_probe::event::{EventKind::Sample, Metric::PageCache};
use std::collections::BTreeSet;
use std::time::Duration;

#[test]
fn all_seven_tracepoints_are_attached() {
    require_root();
    let mut p = spawn(&["--interval", "0.2", "--duration", "10"], &[]);
    p.expect(Duration::from_secs(10), "first sample", is(Sample, PageCache));
    let mut tps = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{}/fdinfo", p.pid())).unwrap() {
        let Ok(text) = std::fs::read_to_string(fd.unwrap().path()) else { continue };
        if !text.contains("link_type:\tperf") {
            continue;
        }
        if let Some(tp) = text.lines().find_map(|l| l.strip_prefix("tp_name:\t")) {
            tps.insert(tp.to_string());
        }
    }
    let want: BTreeSet<String> = [
        "mm_filemap_add_to_page_cache",
        "mm_filemap_delete_from_page_cache",
        "thermal_temperature",
        "mm_vmscan_direct_reclaim_begin",
        "mm_vmscan_direct_reclaim_end",
        "mm_vmscan_memcg_reclaim_begin",
        "mm_vmscan_memcg_reclaim_end",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(tps, want);
}
