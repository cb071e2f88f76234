//! The event loop: kernel ring buffers, PSI wake-ups and the sample timer feed one
//! [`Gate`] + [`Trend`] per metric; crossings become events, output lines and actions.
use crate::action;
use crate::clock::monotonic_ns;
use crate::config::{ConfigError, Mode, Options};
use crate::ebpf::{self, PageCacheProbe, Probe, ProbeError};
use crate::event::{self, dev_name, Event, EventKind, Metric, RawEvent, Source};
use crate::procfs::MemInfo;
use crate::psi::{self, PsiTrigger};
use crate::sysfs::{self, Sensor};
use crate::trigger::{Gate, Transition, Trend};
use aya::maps::{MapData, RingBuf};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("permission denied loading eBPF programs: run as root (or grant CAP_BPF and CAP_PERFMON): {0}")]
    PermissionDenied(ProbeError),
    #[error(transparent)]
    Probe(ProbeError),
    #[error("{what}: {source}")]
    Io { what: &'static str, source: io::Error },
}

impl From<ProbeError> for MonitorError {
    fn from(e: ProbeError) -> Self {
        if e.is_permission_denied() {
            MonitorError::PermissionDenied(e)
        } else {
            MonitorError::Probe(e)
        }
    }
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> MonitorError {
    move |source| MonitorError::Io { what, source }
}

/// What a run did (for callers and tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// trigger + clear + predict events emitted.
    pub events: u64,
    /// Ring-buffer records the kernel had to drop.
    pub dropped: u64,
}

struct MetricState {
    gate: Gate,
    trend: Trend,
    value: Option<f64>,
}

type Ring = AsyncFd<RingBuf<MapData>>;

struct Monitor<W: Write> {
    opts: Options,
    out: W,
    page_bytes: f64,
    pc: Option<PageCacheProbe>,
    thermal: Option<Probe>,
    reclaim: Option<Probe>,
    sensors: Vec<Sensor>,
    metrics: BTreeMap<Metric, MetricState>,
    kernel_temp: BTreeMap<u32, f64>,
    last_stall_ns: u64,
    last_stall_trigger: Option<u64>,
    psi_avg10: Option<f64>,
    summary: Summary,
    actions: JoinSet<()>,
}

/// Run until `--duration`, `--count`, SIGINT or SIGTERM. Output lines go to `out`.
pub async fn run<W: Write>(opts: Options, out: W) -> Result<Summary, MonitorError> {
    opts.validate()?;
    let mut m = Monitor::new(opts, out)?;
    let [mut ring_pc, mut ring_th, mut ring_rc] = m.take_rings()?;
    let psi = match (m.opts.mode, PsiTrigger::open(m.opts.psi_stall)) {
        (Mode::Ebpf, Ok(p)) => Some(p),
        (Mode::Ebpf, Err(e)) => {
            eprintln!("[monitor-probe] warning: no PSI trigger on {} ({e}); memory pressure is sampled only", psi::PSI_MEMORY);
            None
        }
        (Mode::Poll, _) => None,
    };
    let mut sigint = signal(SignalKind::interrupt()).map_err(io_err("installing SIGINT handler"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(io_err("installing SIGTERM handler"))?;
    let mut tick = tokio::time::interval(m.opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let resync_every = if m.opts.resync.is_zero() { Duration::from_secs(86_400 * 365) } else { m.opts.resync };
    let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + resync_every, resync_every);
    let deadline = tokio::time::sleep(m.opts.duration.unwrap_or(Duration::from_secs(86_400 * 365 * 100)));
    tokio::pin!(deadline);

    while !m.done() {
        tokio::select! {
            biased;
            _ = &mut deadline => break,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            b = drain(&mut ring_pc) => m.handle_raw(b.map_err(io_err("reading page-cache ring buffer"))?)?,
            b = drain(&mut ring_th) => m.handle_raw(b.map_err(io_err("reading thermal ring buffer"))?)?,
            b = drain(&mut ring_rc) => m.handle_raw(b.map_err(io_err("reading reclaim ring buffer"))?)?,
            r = psi_wait(psi.as_ref()) => { r.map_err(io_err("waiting on PSI trigger"))?; m.on_psi()?; }
            _ = tick.tick() => m.tick()?,
            _ = resync.tick(), if !m.opts.resync.is_zero() => m.resync()?,
        }
    }
    m.finish().await
}

async fn drain(ring: &mut Option<Ring>) -> io::Result<Vec<RawEvent>> {
    let Some(fd) = ring else { return std::future::pending().await };
    let mut guard = fd.readable_mut().await?;
    // Clear first, then read: a record submitted while we read re-arms readiness.
    guard.clear_ready();
    let rb = guard.get_inner_mut();
    let mut out = Vec::new();
    while let Some(item) = rb.next() {
        if let Some(e) = RawEvent::parse(&item) {
            out.push(e);
        }
    }
    Ok(out)
}

async fn psi_wait(psi: Option<&PsiTrigger>) -> io::Result<()> {
    match psi {
        Some(p) => p.wait().await,
        None => std::future::pending().await,
    }
}

fn mb_to_pages(mb: f64, page_bytes: f64) -> u64 {
    (mb * MIB / page_bytes).ceil() as u64
}

impl<W: Write> Monitor<W> {
    fn new(opts: Options, out: W) -> Result<Self, MonitorError> {
        let page_bytes = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as f64;
        let sensors = sysfs::discover(&opts.sysfs_root);
        let t = opts.thresholds;
        let cooldown_ns = opts.cooldown.as_nanos() as u64;
        let mut metrics = BTreeMap::new();
        for (metric, thr) in [
            (Metric::PageCache, t.cache_mb.value),
            (Metric::Temperature, t.temp_c.value),
            (Metric::MemoryPressure, t.memory_pct.value),
        ] {
            metrics.insert(
                metric,
                MetricState { gate: Gate::new(thr, opts.clear_level(thr), cooldown_ns), trend: Trend::default(), value: None },
            );
        }
        let mut m = Monitor {
            opts,
            out,
            page_bytes,
            pc: None,
            thermal: None,
            reclaim: None,
            sensors,
            metrics,
            kernel_temp: BTreeMap::new(),
            last_stall_ns: 0,
            last_stall_trigger: None,
            psi_avg10: None,
            summary: Summary::default(),
            actions: JoinSet::new(),
        };
        if m.opts.mode == Mode::Ebpf {
            m.load_probes()?;
        }
        Ok(m)
    }

    fn load_probes(&mut self) -> Result<(), MonitorError> {
        let o = &self.opts;
        let t = o.thresholds;
        let gap = o.cooldown.as_nanos() as u64;
        let sample = o.interval.as_nanos() as u64;

        // Page cache: attach, then seed so no insertion between seed and attach is lost.
        let mut pc = PageCacheProbe::load()?;
        pc.skip_devs(&crate::procfs::shmem_devs())?;
        let mem = MemInfo::read().map_err(io_err("reading /proc/meminfo"))?;
        pc.seed(mb_to_pages(mem.cache_mb(), self.page_bytes) as i64)?;
        let trig = mb_to_pages(t.cache_mb.value, self.page_bytes);
        let clear = (o.clear_level(t.cache_mb.value) * MIB / self.page_bytes).floor() as u64;
        pc.probe.configure(trig, clear, gap, sample)?;
        self.pc = Some(pc);

        let mut th = ebpf::load_thermal()?;
        let milli = |c: f64| (c * 1000.0).round() as u64;
        th.configure(milli(t.temp_c.value), milli(o.clear_level(t.temp_c.value)), gap, sample)?;
        self.thermal = Some(th);

        let mut rc = ebpf::load_reclaim()?;
        rc.configure((t.stall_ms.value * 1e6) as u64, 0, gap, 0)?;
        self.reclaim = Some(rc);
        Ok(())
    }

    fn take_rings(&mut self) -> Result<[Option<Ring>; 3], MonitorError> {
        let wrap = |p: Option<&mut Probe>| -> Result<Option<Ring>, MonitorError> {
            match p {
                None => Ok(None),
                Some(p) => Ok(Some(crate::sys::ring_fd(p.take_ring()?).map_err(io_err("registering ring buffer"))?)),
            }
        };
        Ok([wrap(self.pc.as_mut().map(|p| &mut p.probe))?, wrap(self.thermal.as_mut())?, wrap(self.reclaim.as_mut())?])
    }

    fn done(&self) -> bool {
        self.opts.count.is_some_and(|c| self.summary.events >= c)
    }

    fn write_line(&mut self, line: &str) -> Result<(), MonitorError> {
        writeln!(self.out, "{line}").and_then(|_| self.out.flush()).map_err(io_err("writing output"))
    }

    /// Print an event (JSON line, or the human line for non-samples) and run actions on triggers.
    fn emit(&mut self, ev: Event) -> Result<(), MonitorError> {
        if self.opts.json {
            let line = serde_json::to_string(&ev).expect("events serialize");
            self.write_line(&line)?;
        } else if ev.event != EventKind::Sample {
            self.write_line(&ev.human())?;
        }
        if ev.event != EventKind::Sample {
            self.summary.events += 1;
        }
        if ev.event == EventKind::Trigger {
            if let Some(script) = self.opts.exec.clone() {
                let ev = ev.clone();
                self.actions.spawn(async move {
                    if let Err(e) = action::exec(&script, &ev).await {
                        eprintln!("[monitor-probe] warning: {e}");
                    }
                });
            }
            if let Some(sock) = self.opts.notify.clone() {
                self.actions.spawn(async move {
                    if let Err(e) = action::notify(&sock, &ev).await {
                        eprintln!("[monitor-probe] warning: {e}");
                    }
                });
            }
        }
        // Reap finished actions so the set does not grow.
        while self.actions.try_join_next().is_some() {}
        Ok(())
    }

    fn event(&self, kind: EventKind, metric: Metric, value: f64, threshold: Option<f64>, source: Source) -> Event {
        let mut e = Event::new(kind, metric, value, threshold, &self.opts.host);
        e.source = Some(source);
        e
    }

    /// Feed a level metric's gate; emit trigger / clear.
    fn observe(
        &mut self,
        metric: Metric,
        value: f64,
        source: Source,
        kernel_ns: Option<u64>,
        detail: impl FnOnce(&Self) -> serde_json::Value,
    ) -> Result<(), MonitorError> {
        let now = monotonic_ns();
        let st = self.metrics.get_mut(&metric).expect("level metric");
        st.value = Some(value);
        let (trig, clear) = (st.gate.trigger, st.gate.clear);
        let Some(t) = st.gate.update(value, now) else { return Ok(()) };
        let (kind, level) = match t {
            Transition::Trigger => (EventKind::Trigger, trig),
            Transition::Clear => (EventKind::Clear, clear),
        };
        let mut ev = self.event(kind, metric, value, Some(level), source);
        ev.kernel_ns = kernel_ns;
        ev.detail = detail(self);
        self.emit(ev)
    }

    fn top_files_json(&self) -> serde_json::Value {
        let Some(pc) = &self.pc else { return serde_json::Value::Null };
        let top: Vec<_> = pc
            .top_files(self.opts.top)
            .into_iter()
            .map(|f| json!({"dev": dev_name(f.dev), "ino": f.ino, "mb": event::round1(f.pages as f64 * self.page_bytes / MIB)}))
            .collect();
        json!(top)
    }

    fn handle_raw(&mut self, batch: Vec<RawEvent>) -> Result<(), MonitorError> {
        for r in batch {
            match r.metric {
                event::M_PAGE_CACHE => {
                    let mb = r.value as f64 * self.page_bytes / MIB;
                    self.observe(Metric::PageCache, mb, Source::Ebpf, Some(r.ts_ns), |m| {
                        json!({"file": {"dev": dev_name(r.dev), "ino": r.ino}, "top": m.top_files_json()})
                    })?;
                }
                event::M_TEMPERATURE => {
                    // A fake --sysfs-root means "use these sensors": ignore real zones.
                    if self.opts.sysfs_root != std::path::Path::new("/sys") {
                        continue;
                    }
                    let c = r.value as f64 / 1000.0;
                    self.kernel_temp.insert(r.id, c);
                    let hottest = self.kernel_temp.values().cloned().fold(c, f64::max);
                    self.observe(Metric::Temperature, hottest, Source::Ebpf, Some(r.ts_ns), |_| json!({"zone_id": r.id}))?;
                }
                event::M_RECLAIM_STALL if r.kind == event::EV_TRIGGER => {
                    let now = monotonic_ns();
                    let cd = self.opts.cooldown.as_nanos() as u64;
                    if self.last_stall_trigger.is_some_and(|t| now.saturating_sub(t) < cd) {
                        continue;
                    }
                    self.last_stall_trigger = Some(now);
                    let mut ev = self.event(
                        EventKind::Trigger,
                        Metric::ReclaimStall,
                        r.value as f64 / 1e6,
                        Some(self.opts.thresholds.stall_ms.value),
                        Source::Ebpf,
                    );
                    ev.kernel_ns = Some(r.ts_ns);
                    let memcg = r.id & event::MEMCG_FLAG != 0;
                    ev.detail = json!({"tid": r.id & !event::MEMCG_FLAG, "kind": if memcg { "memcg" } else { "direct" }});
                    self.emit(ev)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn on_psi(&mut self) -> Result<(), MonitorError> {
        self.psi_avg10 = psi::read_avg10();
        let mem = MemInfo::read().map_err(io_err("reading /proc/meminfo"))?;
        let avg10 = self.psi_avg10;
        let pct = mem.pressure_pct();
        self.observe(Metric::MemoryPressure, pct, Source::Psi, None, |_| json!({"psi_some_avg10": avg10}))?;
        if self.opts.json {
            let mut ev = self.event(EventKind::Sample, Metric::MemoryPressure, pct, Some(self.opts.thresholds.memory_pct.value), Source::Psi);
            ev.detail = json!({"psi_some_avg10": avg10});
            self.emit(ev)?;
        }
        Ok(())
    }

    /// Periodic sample of every metric, predictions, and the `[Monitor]` line.
    fn tick(&mut self) -> Result<(), MonitorError> {
        let mem = MemInfo::read().map_err(io_err("reading /proc/meminfo"))?;
        let (cache_mb, cache_src) = match &self.pc {
            Some(pc) => (pc.pages()? as f64 * self.page_bytes / MIB, Source::Ebpf),
            None => (mem.cache_mb(), Source::Meminfo),
        };
        self.observe(Metric::PageCache, cache_mb, cache_src, None, |m| json!({"top": m.top_files_json()}))?;
        let pct = mem.pressure_pct();
        self.observe(Metric::MemoryPressure, pct, Source::Meminfo, None, |_| serde_json::Value::Null)?;
        let sysfs_temp = sysfs::hottest(&self.sensors);
        let kernel_temp = self.kernel_temp.values().cloned().reduce(f64::max);
        let temp = match (sysfs_temp.as_ref().map(|r| r.celsius), kernel_temp) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let sensor = sysfs_temp.map(|r| r.label);
        if let Some(t) = temp {
            let s = sensor.clone();
            self.observe(Metric::Temperature, t, Source::Sysfs, None, move |_| json!({"sensor": s}))?;
        }

        // Reclaim stall time since the last tick.
        let stall_ms = match &self.reclaim {
            Some(rc) => {
                let total = rc.state(ebpf::ST_STALL_NS)?;
                let d = total.saturating_sub(self.last_stall_ns);
                self.last_stall_ns = total;
                Some(d as f64 / 1e6)
            }
            None => None,
        };

        self.predict(&[(Metric::PageCache, Some(cache_mb)), (Metric::Temperature, temp), (Metric::MemoryPressure, Some(pct))])?;

        if self.opts.json {
            let t = self.opts.thresholds;
            let mut pc_ev = self.event(EventKind::Sample, Metric::PageCache, cache_mb, Some(t.cache_mb.value), cache_src);
            if self.opts.sample_top {
                pc_ev.detail = json!({"top": self.top_files_json()});
            }
            let mut evs = vec![
                pc_ev,
                self.event(EventKind::Sample, Metric::MemoryPressure, pct, Some(t.memory_pct.value), Source::Meminfo),
            ];
            if let Some(t_c) = temp {
                let mut e = self.event(EventKind::Sample, Metric::Temperature, t_c, Some(t.temp_c.value), Source::Sysfs);
                e.detail = json!({"sensor": sensor});
                evs.push(e);
            }
            if let Some(ms) = stall_ms.filter(|ms| *ms > 0.0) {
                evs.push(self.event(EventKind::Sample, Metric::ReclaimStall, ms, Some(t.stall_ms.value), Source::Ebpf));
            }
            for e in evs {
                self.emit(e)?;
            }
        } else {
            let temp_s = temp.map(|t| format!("{t:.1}°C")).unwrap_or_else(|| "n/a".into());
            let line = format!("[Monitor] Cache: {cache_mb:.1} MB, Temp: {temp_s}, Memory: {pct:.1}%");
            self.write_line(&line)?;
        }
        Ok(())
    }

    fn predict(&mut self, values: &[(Metric, Option<f64>)]) -> Result<(), MonitorError> {
        let now = monotonic_ns();
        let horizon = self.opts.predict.map(|d| d.as_secs_f64());
        let mut out = Vec::new();
        for &(metric, value) in values {
            let Some(v) = value else { continue };
            let st = self.metrics.get_mut(&metric).expect("level metric");
            st.trend.update(now, v);
            let Some(h) = horizon else { continue };
            if st.gate.is_above() || st.gate.is_pending() {
                continue;
            }
            if let Some(eta) = st.trend.predict(v, st.gate.trigger, h) {
                out.push((metric, v, st.gate.trigger, eta, st.trend.slope()));
            }
        }
        for (metric, v, thr, eta, slope) in out {
            let src = if metric == Metric::Temperature { Source::Sysfs } else if self.pc.is_some() { Source::Ebpf } else { Source::Meminfo };
            let mut ev = self.event(EventKind::Predict, metric, v, Some(thr), src);
            ev.detail = json!({"eta_s": event::round1(eta), "slope_per_s": event::round1(slope), "horizon_s": horizon});
            self.emit(ev)?;
        }
        Ok(())
    }

    /// Re-seed the in-kernel page count from /proc/meminfo and report how far it had drifted.
    fn resync(&mut self) -> Result<(), MonitorError> {
        let Some(pc) = self.pc.as_mut() else { return Ok(()) };
        // New tmpfs mounts since the last resync.
        pc.skip_devs(&crate::procfs::shmem_devs())?;
        let mem = MemInfo::read().map_err(io_err("reading /proc/meminfo"))?;
        let target = (mem.cache_mb() * MIB / self.page_bytes).round() as i64;
        let before = pc.seed(target)?;
        let to_mb = |p: i64| p as f64 * self.page_bytes / MIB;
        let (kernel_mb, meminfo_mb, drift) = (to_mb(before), to_mb(target), to_mb(before - target));
        if self.opts.json {
            let mut ev = self.event(EventKind::Sample, Metric::PageCacheDrift, drift, None, Source::Ebpf);
            ev.detail = json!({"kernel_mb": event::round1(kernel_mb), "meminfo_mb": event::round1(meminfo_mb)});
            self.emit(ev)
        } else {
            self.write_line(&format!(
                "[Monitor] Page-cache resync: drift {drift:+.1} MB (kernel {kernel_mb:.1} MB, meminfo Cached-Shmem {meminfo_mb:.1} MB)"
            ))
        }
    }

    async fn finish(mut self) -> Result<Summary, MonitorError> {
        for p in [self.pc.as_ref().map(|p| &p.probe), self.thermal.as_ref(), self.reclaim.as_ref()].into_iter().flatten() {
            self.summary.dropped += p.state(ebpf::ST_DROPPED).unwrap_or(0);
        }
        if self.summary.dropped > 0 {
            eprintln!("[monitor-probe] warning: the kernel dropped {} ring-buffer records (buffer full)", self.summary.dropped);
        }
        // Let running --exec / --notify actions finish (bounded).
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.actions.join_next().await.is_some() {}
        })
        .await;
        Ok(self.summary)
    }
}
