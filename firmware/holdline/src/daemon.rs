//! `holdline run`: the tokio driver around `holdline_core::Edge`.
//!
//! One loop task owns the edge. It waits for the first of: a message from
//! the sockets, a store completion, a console request, the edge's timer,
//! or SIGTERM/SIGINT; feeds it to the edge; then drains the edge's outputs
//! (messages to send, batches to write). Store batches go to the store's
//! group-commit writer; a batch with a token reports back when durable,
//! which releases the REGISTER 2xx it holds.
//!
//! Start order: store (open, load), sockets, console; then the `ready` log
//! line. A failure at any step exits with its documented code, nothing
//! left half-started.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use holdline_console::command::{CloudMode, Command};
use holdline_console::serial::{Login, SerialConfig};
use holdline_core::{Edge, EdgeConfig, Peer, ProbeConfig, Subnet, Transport};
use holdline_health::tasks;
use holdline_store::{Store, StoreOptions};
use holdline_survival::uplink::Mode;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::appstate;
use crate::config::{self, Config};
use crate::console_srv::{self, ConsoleRequest};
use crate::exit::Exit;
use crate::hw;
use crate::mgmt;
use crate::net::{self, NetEvent};
use crate::persist;
use crate::update_cmd;

/// The SIP loop checks in at every wake-up (at least once a second).
const SIP_DEADLINE: Duration = Duration::from_secs(10);
/// The store writer thread loops at least every second.
const STORE_DEADLINE: Duration = Duration::from_secs(20);
/// The uplink probe runs on the loop's timer (at least once a second).
const UPLINK_DEADLINE: Duration = Duration::from_secs(10);

type AgentResult = Result<update_cmd::TickAction, update_cmd::UpdateCmdError>;

async fn join_opt(h: &mut Option<tokio::task::JoinHandle<AgentResult>>) -> Option<AgentResult> {
    match h {
        Some(j) => j.await.ok(),
        None => std::future::pending().await,
    }
}

/// Refreshes the snapshot read by the management API and the update agent.
fn publish(
    shared: &appstate::Shared,
    edge: &Edge,
    hw: &hw::Hw,
    store: &Store,
    now: Instant,
    started: Instant,
    tcp: usize,
) {
    let report = hw.health_report().to_string();
    let tasks_fresh = hw::health_ok(&report);
    let status = console_srv::answer_from_edge(
        &holdline_console::command::Command::Status,
        edge,
        now,
        started,
        store,
        tcp,
        Some(hw),
    )
    .map(|a| a.json())
    .unwrap_or_default();
    let rtt_s = if edge.probe().state_name() == "up" {
        edge.probe().last_rtt.map(|d| d.as_secs_f64())
    } else {
        None
    };
    appstate::write(
        shared,
        appstate::Snapshot {
            tasks_fresh,
            problems: if tasks_fresh {
                Vec::new()
            } else {
                vec!["a critical task is not checking in".to_string()]
            },
            cloud: edge.probe().state_name().to_string(),
            status_json: status,
            bindings: edge.bindings().len(),
            subscriptions: edge.subs().len(),
            calls_active: edge.calls().active(),
            rtt_s,
            quarantined: store.stats().quarantined,
            watchdog_resets: hw.watchdog_resets(),
            // integrator (issue 4/7): survival and resync for health and metrics.
            // Survival counts as serving only once this boot has heard the
            // cloud: a firmware that never reached its cloud has not shown
            // that its cloud link works, so a trial boot of it must not be
            // committed on the strength of "survival" alone.
            survival_serving: matches!(
                edge.probe().state_name(),
                "suspect" | "down" | "recovering"
            ) && edge.probe().status(now).last_heard.is_some(),
            uplink_transitions: {
                let c = edge.probe().status(now).counters;
                vec![
                    ("suspect", c.to_suspect),
                    ("down", c.to_down),
                    ("recovering", c.to_recovering),
                    ("up", c.to_up),
                ]
            },
            resync: edge.resync_progress().map(|p| {
                let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
                appstate::ResyncCounts {
                    given_back: n(p.bindings_confirmed),
                    pending: n(p
                        .bindings_total
                        .saturating_sub(p.bindings_confirmed + p.bindings_failed)),
                    refused: n(p.rejected.0 + p.rejected.1 + p.rejected.2),
                    failed: n(p.bindings_failed),
                }
            }),
        },
    );
}

async fn recv_opt(rx: &mut Option<mpsc::Receiver<()>>) -> bool {
    match rx {
        Some(r) => r.recv().await.is_some(),
        None => std::future::pending().await,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn peer(e: &config::Endpoint) -> Peer {
    Peer {
        transport: match e.transport {
            config::Transport::Udp => Transport::Udp,
            config::Transport::Tcp => Transport::Tcp,
        },
        addr: e.addr,
    }
}

/// The edge's settings from the config.
pub fn edge_config(cfg: &Config) -> EdgeConfig {
    let mut cloud_addrs: Vec<IpAddr> = cfg.cloud.addresses.clone();
    if let Some(b) = &cfg.survival.backup_route {
        cloud_addrs.push(b.addr.ip());
    }
    EdgeConfig {
        lan: cfg.lan.listen.iter().map(peer).collect(),
        wan: cfg.wan.listen.iter().map(peer).collect(),
        lan_advertise: cfg.lan.advertise,
        wan_advertise: cfg.wan.advertise,
        lan_subnets: cfg
            .lan
            .subnets
            .iter()
            .map(|s| Subnet {
                addr: s.addr,
                prefix: s.prefix,
            })
            .collect(),
        cloud: peer(&cfg.cloud.proxy),
        cloud_addrs,
        domain: cfg.cloud.domain.clone(),
        probe: ProbeConfig {
            interval: Duration::from_millis(cfg.uplink.probe_interval_ms),
            timeout: Duration::from_millis(cfg.uplink.probe_timeout_ms),
            down_after: cfg.uplink.down_after,
        },
        seed: u64::from(std::process::id()) ^ (unix_now() as u64).rotate_left(17),
    }
}

/// A send failed at the transport: evidence for the uplink monitor when it
/// went to the cloud (the edge decides; the transition it causes is logged
/// by the edge, each error only at debug level so that an ICMP storm does
/// not flood the log).
fn transport_error(
    edge: &mut Edge,
    now: Instant,
    side: holdline_core::Side,
    to: Peer,
    error: &str,
) {
    if side == holdline_core::Side::Wan && to == edge.cloud() {
        tracing::debug!(%to, error, "transport error to the cloud");
    }
    edge.handle_transport_error(now, side, to);
}

/// Survival settings from `[cloud]` and `[survival]` (integrator, issue 4).
pub fn survival_config(cfg: &Config, seed: u64) -> holdline_core::SurvivalConfig {
    holdline_core::SurvivalConfig {
        trusted: cfg.cloud.trusted,
        resync_rate: cfg.cloud.resync_rate,
        backup_route: cfg.survival.backup_route.as_ref().map(peer),
        emergency: cfg.survival.emergency.clone(),
        seed,
        phone_refresh: cfg.survival.phone_refresh(),
        ..holdline_core::SurvivalConfig::default()
    }
}

enum Wake {
    Net(NetEvent),
    StoreDone(u64, bool),
    Console(ConsoleRequest),
    Timer,
    FactoryReset(bool),
    Update(Option<Result<update_cmd::TickAction, update_cmd::UpdateCmdError>>),
    Shutdown(&'static str),
}

/// Runs the appliance until SIGTERM/SIGINT.
pub async fn run(cfg: Config) -> Exit {
    let started = Instant::now();
    // Finish a factory reset that a power loss interrupted (fieldtech.rs).
    match crate::fieldtech::resume_pending_reset(&cfg) {
        Ok(true) => return Exit::Restart, // config may have changed: start again to load it
        Ok(false) => {}
        Err(e) => warn!(error = %e, "interrupted factory reset not finished"),
    }
    // Store.
    let opts = StoreOptions {
        purge_interval: Duration::from_secs(cfg.store.purge_interval_s.max(1)),
        ..StoreOptions::default()
    };
    let path = cfg.store.path.clone();
    let opened = tokio::task::spawn_blocking(move || Store::open(&path, opts)).await;
    let (store, report) = match opened {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            error!(path = %cfg.store.path.display(), error = %e, "store cannot be opened");
            eprintln!("holdline: store {}: {e}", cfg.store.path.display());
            return Exit::StoreFatal;
        }
        Err(e) => {
            error!(error = %e, "store open task failed");
            return Exit::Internal;
        }
    };
    if let Some(aside) = &report.set_aside {
        warn!(
            set_aside = %aside.display(),
            reason = report.set_aside_reason.as_deref().unwrap_or("-"),
            "damaged store set aside; started with a fresh one"
        );
    }
    let now = Instant::now();
    let ecfg0 = edge_config(&cfg);
    let survival_seed = ecfg0.seed ^ 0x5eed_5eed;
    let mut edge = Edge::new(ecfg0, now, unix_now());
    edge.set_survival(survival_config(&cfg, survival_seed));
    let s2 = store.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        (s2.load_bindings(), s2.load_subscriptions(), s2.load_mwi())
    })
    .await;
    match loaded {
        Ok((b, s, m)) => {
            match b {
                Ok(l) => {
                    let n = edge.load_bindings(
                        Instant::now(),
                        l.items
                            .into_iter()
                            .map(persist::binding_from_store)
                            .collect(),
                    );
                    info!(bindings = n, quarantined = l.quarantined, "bindings loaded");
                }
                Err(e) => warn!(error = %e, "bindings could not be loaded; starting empty"),
            }
            match s {
                Ok(l) => edge
                    .load_subscriptions(l.items.into_iter().map(persist::sub_from_store).collect()),
                Err(e) => warn!(error = %e, "subscriptions could not be loaded"),
            }
            match m {
                Ok(l) => {
                    for m in l.items {
                        edge.load_mwi(
                            &m.aor,
                            holdline_core::Mwi {
                                body: m.body,
                                content_type: m.content_type,
                                at: m.at,
                            },
                        );
                    }
                }
                Err(e) => warn!(error = %e, "MWI states could not be loaded"),
            }
        }
        Err(e) => {
            error!(error = %e, "store load task failed");
            return Exit::Internal;
        }
    }
    let purger = match store.spawn_purger() {
        Ok(p) => Some(p),
        Err(e) => {
            warn!(error = %e, "expired-record purger not started");
            None
        }
    };

    // Sockets.
    let (net_tx, mut net_rx) = mpsc::channel::<NetEvent>(4096);
    let ecfg = edge_config(&cfg);
    let limits = crate::limits::Limits::from_config(&cfg); // wire: per-source rate limits
    let mut net = match net::bind(
        &ecfg.lan,
        &ecfg.wan,
        net_tx,
        cfg.sip.max_message_size,
        limits,
    )
    .await
    {
        Ok(n) => n,
        Err(e) => {
            error!(error = %e, "cannot listen");
            eprintln!("holdline: {e}");
            return Exit::CannotListen;
        }
    };

    // Console.
    console_srv::remove_stale(&cfg.console.socket);
    let listener = match UnixListener::bind(&cfg.console.socket) {
        Ok(l) => l,
        Err(e) => {
            error!(socket = %cfg.console.socket.display(), error = %e, "cannot open the console socket");
            eprintln!(
                "holdline: console socket {}: {e}",
                cfg.console.socket.display()
            );
            return Exit::CannotListen;
        }
    };
    let (con_tx, mut con_rx) = mpsc::channel::<ConsoleRequest>(64);
    let (cloud_tx, cloud_rx) = tokio::sync::watch::channel::<&'static str>("unknown");

    // Board: watchdog feeding gated by task health, LEDs, button, serial console.
    let state_dir = cfg
        .store
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    let mut hw_cfg = hw::HwConfig::new(cfg.board.profile.clone(), state_dir);
    hw_cfg.health.fault_injection = cfg.health.fault_injection;
    if cfg.console.serial {
        let login = match &cfg.console.password_hash {
            Some(h) => match holdline_console::login::PasswordHash::parse(h) {
                Ok(h) => Login::Password(h),
                Err(_) => Login::Disabled,
            },
            None if cfg.board.profile == "sim" => Login::Open,
            None => Login::Disabled,
        };
        let mut serial = SerialConfig::new(login);
        serial.idle_timeout = Duration::from_secs(cfg.console.idle_timeout_s.max(10));
        hw_cfg.serial = Some(serial);
    }
    let ctx = console_srv::Ctx {
        to_loop: con_tx,
        store: store.clone(),
        update: cfg.update.clone(),
        board: cfg.board.profile.clone(),
    };
    let exec = console_srv::SerialExec {
        ctx: ctx.clone(),
        site: cfg.cloud.domain.clone(),
        cloud: cloud_rx,
    };
    let mut hw = match hw::start(hw_cfg, exec).await {
        Ok(h) => h,
        Err(e) => {
            error!(profile = %cfg.board.profile, error = %e, "board cannot be started");
            eprintln!("holdline: board.profile {:?}: {e}", cfg.board.profile);
            return Exit::Board;
        }
    };
    let now = Instant::now();
    let sip_task = hw.health().register(tasks::SIP, SIP_DEADLINE, now);
    let store_task = hw.health().register(tasks::STORE, STORE_DEADLINE, now);
    let uplink_task = hw.health().register(tasks::UPLINK, UPLINK_DEADLINE, now);
    let mut factory_reset = hw.factory_reset_requests();
    let mut field =
        crate::fieldtech::FieldTech::new(&cfg, crate::fieldtech::own_config_path(), &hw);
    field.record_boot(&hw, &store); // store Event "watchdog.reset" after a watchdog reset

    let console_task = tokio::spawn(console_srv::serve(listener, ctx));

    // State snapshot for the management API and the update agent.
    let shared: appstate::Shared = Default::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if cfg.mgmt.enabled {
        let backend = std::sync::Arc::new(appstate::Backend {
            shared: shared.clone(),
            update: cfg.update.clone(),
            board: cfg.board.profile.clone(),
        });
        let mcfg = cfg.mgmt.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.changed().await;
            };
            if let Err(e) = mgmt::serve(&mcfg, backend, shutdown).await {
                error!(error = %e, "management API stopped");
            }
        });
    }
    // Update agent: reconciles the boot (a trial boot is judged by health), then ticks.
    let sh = shared.clone();
    let mut update_agent = Some(tokio::spawn(update_cmd::supervise(
        cfg.update.clone(),
        cfg.board.profile.clone(),
        move || appstate::read(&sh).healthy(),
        Duration::from_secs(5),
    )));

    // Signals.
    let mut sigterm = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot install SIGTERM handler");
            return Exit::Internal;
        }
    };
    let mut sigint = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
    {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot install SIGINT handler");
            return Exit::Internal;
        }
    };

    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u64, bool)>();
    let notifier = crate::sdnotify::Notifier::from_env();
    let mut last_cloud = "";
    info!(
        lan = %cfg.lan.listen.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        wan = %cfg.wan.listen.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        cloud = %cfg.cloud.proxy,
        console = %cfg.console.socket.display(),
        store = %cfg.store.path.display(),
        board = %cfg.board.profile,
        bindings = edge.bindings().len(),
        "holdline ready"
    );
    notifier.notify("READY=1");

    let exit = loop {
        let deadline = tokio::time::Instant::from_std(edge.poll_timeout());
        let wake = tokio::select! {
            ev = net_rx.recv() => match ev { Some(e) => Wake::Net(e), None => Wake::Shutdown("sockets closed") },
            d = done_rx.recv() => match d { Some((t, ok)) => Wake::StoreDone(t, ok), None => Wake::Timer },
            c = con_rx.recv() => match c { Some(r) => Wake::Console(r), None => Wake::Timer },
            _ = tokio::time::sleep_until(deadline) => Wake::Timer,
            r = recv_opt(&mut factory_reset) => Wake::FactoryReset(r),
            u = join_opt(&mut update_agent) => Wake::Update(u),
            _ = sigterm.recv() => Wake::Shutdown("SIGTERM"),
            _ = sigint.recv() => Wake::Shutdown("SIGINT"),
        };
        let now = Instant::now();
        match wake {
            Wake::Net(NetEvent::Message { side, from, bytes }) => {
                edge.handle_message(now, side, from, &bytes);
                // Drain what else is already waiting, to batch store writes.
                for _ in 0..256 {
                    match net_rx.try_recv() {
                        Ok(NetEvent::Message { side, from, bytes }) => {
                            edge.handle_message(now, side, from, &bytes)
                        }
                        Ok(NetEvent::TcpUp { side, peer, tx }) => {
                            net.tcp_up(side, peer, tx);
                            edge.handle_connection(now, side, peer, true);
                        }
                        Ok(NetEvent::TcpDown { side, peer }) => {
                            net.tcp_down(side, peer);
                            edge.handle_connection(now, side, peer, false);
                        }
                        Ok(NetEvent::TransportError { side, to, error }) => {
                            transport_error(&mut edge, now, side, to, &error)
                        }
                        Err(_) => break,
                    }
                }
            }
            Wake::Net(NetEvent::TcpUp { side, peer, tx }) => {
                net.tcp_up(side, peer, tx);
                edge.handle_connection(now, side, peer, true);
            }
            Wake::Net(NetEvent::TcpDown { side, peer }) => {
                net.tcp_down(side, peer);
                edge.handle_connection(now, side, peer, false);
            }
            Wake::Net(NetEvent::TransportError { side, to, error }) => {
                transport_error(&mut edge, now, side, to, &error)
            }
            Wake::StoreDone(token, ok) => edge.handle_store_done(now, token, ok),
            Wake::Console(req) if matches!(req.command, Command::Cloud(_)) => {
                if let Command::Cloud(m) = req.command {
                    let mode = match m {
                        CloudMode::ForceDown => Mode::ForcedDown,
                        CloudMode::ForceUp => Mode::ForcedUp,
                        CloudMode::Auto => Mode::Auto,
                    };
                    edge.set_cloud_mode(now, mode);
                }
                let answer = console_srv::answer_from_edge(
                    &Command::ShowCloud,
                    &edge,
                    now,
                    started,
                    &store,
                    net.tcp_count(),
                    Some(&hw),
                )
                .unwrap_or_else(|| holdline_console::render::Answer::error("internal"));
                let _ = req.reply.send(answer);
            }
            // integrator (issue 4): `resync now` ends a running hold-down.
            Wake::Console(req) if matches!(req.command, Command::ResyncNow) => {
                let answer = if edge.resync_now(now) {
                    console_srv::answer_from_edge(
                        &Command::ShowResync,
                        &edge,
                        now,
                        started,
                        &store,
                        net.tcp_count(),
                        Some(&hw),
                    )
                    .unwrap_or_else(|| holdline_console::render::Answer::error("internal"))
                } else {
                    holdline_console::render::Answer::error(
                        "resync now: the cloud is not recovering (nothing to resync)",
                    )
                };
                let _ = req.reply.send(answer);
            }
            Wake::Console(req) => {
                // Field-tech commands first (reboot, factory-reset, debug stall).
                let answer = match field.answer(&req.command, &hw, &store) {
                    Some(a) => a,
                    None => console_srv::answer_from_edge(
                        &req.command,
                        &edge,
                        now,
                        started,
                        &store,
                        net.tcp_count(),
                        Some(&hw),
                    )
                    .unwrap_or_else(|| {
                        holdline_console::render::Answer::error(
                            "internal: store command routed to the loop",
                        )
                    }),
                };
                let _ = req.reply.send(answer);
            }
            Wake::Timer => {}
            Wake::FactoryReset(true) => field.button_long_press(&store),
            Wake::FactoryReset(false) => factory_reset = None,
            Wake::Update(result) => {
                update_agent = None;
                match result {
                    Some(Ok(update_cmd::TickAction::Restart { version, reason })) => {
                        warn!(%version, %reason, "update agent asks for a restart");
                        break Exit::Restart;
                    }
                    Some(Ok(other)) => info!(?other, "update agent stopped"),
                    Some(Err(e)) => {
                        warn!(error = %e, "update agent not running; SIP service continues")
                    }
                    None => warn!("update agent task ended abnormally"),
                }
            }
            Wake::Shutdown(why) => {
                info!(signal = why, "shutting down");
                break Exit::Ok;
            }
        }
        if let Some(exit) = field.should_stop() {
            break exit; // 500 ms after the answer, so it reaches the terminal
        }
        if now >= edge.poll_timeout() {
            edge.handle_timeout(now);
            // The probe runs on this timer: it is alive while this runs.
            uplink_task.check_in(now);
            let st = store.stats();
            if st.writer_alive && st.writer_idle < STORE_DEADLINE / 2 {
                store_task.check_in(now);
            }
            publish(&shared, &edge, &hw, &store, now, started, net.tcp_count());
            let cloud = edge.probe().state_name();
            if cloud != last_cloud {
                last_cloud = cloud;
                let _ = cloud_tx.send(cloud);
                hw.set_cloud(hw::cloud_light(cloud));
            }
        }
        sip_task.check_in(now);
        while let Some(line) = edge.poll_log() {
            info!("{line}");
        }
        while let Some(t) = edge.poll_transmit() {
            net.send(t.side, t.to, t.bytes);
        }
        while let Some(job) = edge.poll_store() {
            let writes = job
                .writes
                .into_iter()
                .map(persist::write_to_store)
                .collect();
            let rx = store.commit(writes);
            let done = done_tx.clone();
            let token = job.token;
            tokio::spawn(async move {
                let ok = match rx.await {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        warn!(error = %e, "store commit failed");
                        false
                    }
                    Err(_) => {
                        warn!("store writer gone");
                        false
                    }
                };
                if let Some(t) = token {
                    let _ = done.send((t, ok));
                }
            });
        }
    };

    notifier.notify("STOPPING=1");
    let _ = stop_tx.send(true);
    if let Some(u) = update_agent.take() {
        u.abort();
    }
    console_task.abort();
    hw.shutdown().await;
    console_srv::remove_stale(&cfg.console.socket);
    drop(purger);
    // Dropping the last store handle lets the writer finish queued commits.
    let _ = tokio::task::spawn_blocking(move || drop(store)).await;
    info!("stopped");
    field.finish(exit).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, std::path::Path::new("t.toml")).expect("config")
    }

    #[test]
    fn survival_and_uplink_keys_reach_the_edge() {
        let c = parse(
            "[cloud]\ntrusted = true\nresync_rate = 7\n\
             [survival]\nphone_refresh_s = 300\nemergency = [\"999\"]\n\
             [uplink]\nprobe_interval_ms = 700\nprobe_timeout_ms = 250\ndown_after = 4\n",
        );
        let s = survival_config(&c, 1);
        assert!(s.trusted);
        assert_eq!(s.resync_rate, 7);
        assert_eq!(s.emergency, vec!["999".to_string()]);
        assert_eq!(s.phone_refresh, Some(Duration::from_secs(300)));
        let e = edge_config(&c);
        assert_eq!(e.probe.interval, Duration::from_millis(700));
        assert_eq!(e.probe.timeout, Duration::from_millis(250));
        assert_eq!(e.probe.down_after, 4);
        // Defaults: phones keep the cloud's expiry; 300 ms probe time-out.
        let d = parse("");
        assert_eq!(survival_config(&d, 1).phone_refresh, None);
        assert_eq!(edge_config(&d).probe.timeout, Duration::from_millis(300));
    }
}
