//! --exec runs a script with the event; --notify writes one JSON line to a Unix socket.
use crate::util::*;
use monitor_probe::action::NotifyMessage;
use monitor_probe::event::{Event, EventKind, Metric};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::time::Duration;

#[test]
fn exec_and_notify_receive_the_trigger() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("on-trigger.sh");
    let out = dir.path().join("script.out");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{{ echo \"metric=$MONITOR_METRIC event=$MONITOR_EVENT value=$MONITOR_VALUE threshold=$MONITOR_THRESHOLD\"; cat; }} > {}.tmp\nmv {0}.tmp {0}\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("migrator.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let reader = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).unwrap();
        line
    });

    let root = fixture("hot");
    let mut p = spawn(
        &[
            "--sysfs-root", root.to_str().unwrap(), "--interval", "0.1", "--count", "1",
            "--exec", script.to_str().unwrap(), "--notify", sock.to_str().unwrap(), "--host", "a",
        ],
        &[],
    );
    p.expect(Duration::from_secs(10), "trigger", is(EventKind::Trigger, Metric::Temperature));
    assert!(p.finish(Duration::from_secs(10)).success());

    let line = reader.join().unwrap();
    let msg: NotifyMessage = serde_json::from_str(&line).unwrap();
    assert_eq!(msg.cmd, "trigger");
    assert_eq!(msg.event.metric, Metric::Temperature);
    assert_eq!(msg.event.host, "a");

    let text = std::fs::read_to_string(&out).expect("script ran");
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), "metric=temperature event=trigger value=85 threshold=80");
    let ev: Event = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(ev.value, 85.0);
}
