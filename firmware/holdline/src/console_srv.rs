//! The console's server side: one command line in, one [`Answer`] out.
//!
//! [`answer_from_edge`] runs inside the daemon's loop (it reads the core's
//! state, never blocks); store commands that touch the database run on a
//! blocking thread ([`answer_from_store`]). The same functions serve the
//! Unix socket and (through the board's serial console) the serial port.

use std::path::Path;
use std::time::{Duration, Instant};

use holdline_console::command::{Command, HELP};
use holdline_console::render::{Answer, Block, Table, Value};
use holdline_core::uplink::reason_name;
use holdline_core::{CallState, Direction, Edge, Provenance, SubState, Uplink};
use holdline_store::Store;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// A console request handed to the daemon's loop.
pub struct ConsoleRequest {
    /// The parsed command.
    pub command: Command,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Answer>,
}

/// Firmware version string.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn ms(d: Duration) -> Value {
    Value::Float((d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0)
}

fn secs(d: Duration) -> Value {
    Value::Int(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Answers commands that read the core's state. `None` for commands that
/// need the store ([`answer_from_store`]).
pub fn answer_from_edge(
    cmd: &Command,
    edge: &Edge,
    now: Instant,
    started: Instant,
    store: &Store,
    tcp: usize,
    hw: Option<&crate::hw::Hw>,
) -> Option<Answer> {
    let unix = edge.unix(now);
    Some(match cmd {
        Command::Help => Answer::ok(vec![Block::Table {
            name: "commands",
            table: Table {
                columns: vec!["command", "what"],
                rows: HELP
                    .iter()
                    .map(|(c, w)| vec![Value::from(*c), Value::from(*w)])
                    .collect(),
            },
        }]),
        Command::Version => Answer::ok(vec![Block::Fields {
            name: "version",
            fields: vec![
                ("firmware", format!("holdline {}", version()).into()),
                (
                    "build",
                    if cfg!(debug_assertions) {
                        "debug"
                    } else {
                        "release"
                    }
                    .into(),
                ),
            ],
        }]),
        Command::Status => {
            let s = edge.stats();
            let st = store.stats();
            Answer::ok(vec![Block::Fields {
                name: "status",
                fields: vec![
                    ("version", version().into()),
                    ("uptime_s", secs(now.saturating_duration_since(started))),
                    ("cloud", edge.probe().state_name().into()),
                    ("bindings", edge.bindings().len().into()),
                    ("aors", edge.bindings().aors().into()),
                    ("calls_active", edge.calls().active().into()),
                    ("subscriptions", edge.subs().len().into()),
                    ("held_for_store", edge.held().into()),
                    ("tcp_connections", tcp.into()),
                    ("messages_in", s.rx.into()),
                    ("messages_out", s.tx.into()),
                    ("forbidden", s.forbidden.into()),
                    ("malformed", s.bad.into()),
                    ("overload_503", s.overload.into()),
                    ("rate_limited_lan", crate::limits::limited().0.into()),
                    ("rate_limited_wan", crate::limits::limited().1.into()),
                    ("late_provisional", s.late_provisional.into()),
                    ("trying_sent", s.trying_sent.into()),
                    ("trying_dropped", s.trying_dropped.into()),
                    ("invite_retransmissions", s.invite_retransmissions.into()),
                    ("invite_timeouts_408", s.invite_timeouts.into()),
                    ("phone_unreachable", s.unreachable.into()),
                    ("registered", s.registered.into()),
                    ("store", st.path.display().to_string().into()),
                    ("store_commits", st.commits.into()),
                    ("store_failed", (st.commits_failed + s.store_failed).into()),
                ],
            }])
        }
        Command::ShowRegistrations { aor } => {
            let want = aor.as_deref().map(holdline_core::bindings::uri_key);
            let rows = edge
                .bindings()
                .iter()
                .filter(|b| match &want {
                    Some(w) => holdline_core::bindings::uri_key(&b.aor) == *w,
                    None => true,
                })
                .map(|b| {
                    vec![
                        b.aor.clone().into(),
                        b.contact_uri.clone().into(),
                        format!("{}:{}", b.transport, b.source).into(),
                        Value::Int((b.expires_at - unix).max(0)),
                        match b.provenance {
                            Provenance::CloudVerified { .. } => "cloud",
                            Provenance::LocalOnly { .. } => "local",
                        }
                        .into(),
                        b.path.first().cloned().into(),
                    ]
                })
                .collect::<Vec<_>>();
            if aor.is_some() && rows.is_empty() {
                return Some(Answer::error(format!(
                    "no registration for {}",
                    aor.as_deref().unwrap_or_default()
                )));
            }
            Answer::ok(vec![Block::Table {
                name: "registrations",
                table: Table {
                    columns: vec!["aor", "contact", "source", "expires", "verified", "path"],
                    rows,
                },
            }])
        }
        Command::ShowCalls => {
            let rows = edge
                .calls()
                .list()
                .into_iter()
                .map(|c| {
                    let how = match &c.state {
                        CallState::Terminated { how, .. } => Value::Text(how.text()),
                        _ => Value::Null,
                    };
                    vec![
                        c.call_id.clone().into(),
                        match c.direction {
                            Direction::Outbound => "out",
                            Direction::Inbound => "in",
                        }
                        .into(),
                        c.from_uri.clone().into(),
                        c.to_uri.clone().into(),
                        c.state.name().into(),
                        secs(now.saturating_duration_since(c.started)),
                        how,
                    ]
                })
                .collect();
            Answer::ok(vec![Block::Table {
                name: "calls",
                table: Table {
                    columns: vec!["call_id", "dir", "from", "to", "state", "age_s", "ended"],
                    rows,
                },
            }])
        }
        Command::ShowSubscriptions => {
            let rows = edge
                .subs()
                .list()
                .into_iter()
                .map(|s| {
                    vec![
                        s.event.clone().into(),
                        s.watcher_aor.clone().into(),
                        s.target_uri.clone().into(),
                        s.state.name().into(),
                        if s.expires_at > 0 && s.state != SubState::Pending {
                            Value::Int((s.expires_at - unix).max(0))
                        } else {
                            Value::Null
                        },
                        s.last_version.into(),
                        s.notifies.into(),
                        s.notify_cseq.into(),
                        s.call_id.clone().into(),
                    ]
                })
                .collect();
            let mwi = edge
                .subs()
                .mwi_all()
                .map(|(aor, m)| {
                    vec![
                        aor.clone().into(),
                        m.waiting().into(),
                        Value::Int((unix - m.at).max(0)),
                        m.body
                            .lines()
                            .find(|l| l.to_ascii_lowercase().starts_with("voice-message"))
                            .map(|l| l.trim().to_string())
                            .into(),
                    ]
                })
                .collect();
            Answer::ok(vec![
                Block::Table {
                    name: "subscriptions",
                    table: Table {
                        columns: vec![
                            "event", "watcher", "target", "state", "expires", "version",
                            "notifies", "cseq", "call_id",
                        ],
                        rows,
                    },
                },
                Block::Table {
                    name: "mwi",
                    table: Table {
                        columns: vec!["aor", "waiting", "age_s", "summary"],
                        rows: mwi,
                    },
                },
            ])
        }
        Command::ShowCloud => {
            let p = edge.probe();
            let st = p.status(now);
            let since = p.instant(st.state.since());
            let (failures, hold_down) = match &st.state {
                Uplink::Suspect { failures, .. } => (*failures, None),
                Uplink::Recovering {
                    failures,
                    hold_down,
                    ..
                } => (*failures, Some(*hold_down)),
                _ => (0, None),
            };
            let rtt = if p.state_name() == "up" {
                p.last_rtt
            } else {
                None
            };
            let c = &st.counters;
            // Why the uplink is in this state (a technician's first question).
            let reason = match &st.state {
                Uplink::Down { reason, .. } => Some(reason_name(reason)),
                _ => p
                    .last_change
                    .filter(|l| l.to == st.state.kind())
                    .map(|l| reason_name(&l.reason)),
            };
            let last_change = p.last_change.map(|l| {
                format!(
                    "{} -> {} ({}) {}s ago",
                    l.from,
                    l.to,
                    reason_name(&l.reason),
                    now.saturating_duration_since(l.at).as_secs()
                )
            });
            let es = edge.stats();
            Answer::ok(vec![Block::Fields {
                name: "cloud",
                fields: vec![
                    ("proxy", edge.cloud().to_string().into()),
                    ("state", p.state_name().into()),
                    ("reason", reason.map(Value::from).unwrap_or(Value::Null)),
                    ("mode", format!("{:?}", st.mode).to_lowercase().into()),
                    ("since_s", secs(now.saturating_duration_since(since))),
                    (
                        "last_change",
                        last_change.map(Value::from).unwrap_or(Value::Null),
                    ),
                    ("rtt_ms", rtt.map(ms).unwrap_or(Value::Null)),
                    ("last_rtt_ms", p.last_rtt.map(ms).unwrap_or(Value::Null)),
                    ("failures", failures.into()),
                    ("hold_down_s", hold_down.map(secs).unwrap_or(Value::Null)),
                    ("flap_level", st.flap_level.into()),
                    ("probes_sent", c.probes_sent.into()),
                    ("probes_answered", c.probes_answered.into()),
                    ("probes_timed_out", c.probes_timed_out.into()),
                    ("transport_errors", c.transport_errors.into()),
                    ("transaction_timeouts", c.transaction_timeouts.into()),
                    ("service_unavailable", c.service_unavailable.into()),
                    ("unanswered_local", es.cloud_timeouts_local.into()),
                    ("unanswered_503", es.cloud_timeouts_503.into()),
                    ("to_suspect", c.to_suspect.into()),
                    ("to_down", c.to_down.into()),
                    ("to_recovering", c.to_recovering.into()),
                    ("to_up", c.to_up.into()),
                    ("recoveries_failed", c.recoveries_failed.into()),
                    ("resyncs", c.resyncs.into()),
                    ("last_status", p.last_status.map(u32::from).into()),
                    ("probe_interval_ms", ms(p.config().interval)),
                ],
            }])
        }
        Command::ShowStore
        | Command::StoreCheck
        | Command::StoreQuarantine
        | Command::ShowLog { .. } => return None,
        Command::ShowHealth => match hw {
            Some(hw) => {
                let report = hw.health_report();
                let text = report.to_string();
                let lines = Block::Lines {
                    name: "health",
                    lines: text.lines().map(str::to_string).collect(),
                };
                if crate::hw::health_ok(&text) {
                    Answer::ok(vec![lines])
                } else {
                    Answer {
                        ok: false,
                        error: Some("a critical task is not checking in".into()),
                        blocks: vec![lines],
                    }
                }
            }
            None => Answer::not_available("show health"),
        },
        Command::ShowLeds => match hw {
            Some(hw) => Answer::ok(vec![Block::Lines {
                name: "leds",
                lines: hw.leds_text().lines().map(str::to_string).collect(),
            }]),
            None => Answer::not_available("show leds"),
        },
        // integrator (issue 4): resync progress and survival counters.
        Command::ShowResync => {
            let sv = edge.survival_stats();
            let mut fields: Vec<(&'static str, Value)> = match edge.resync_progress() {
                None => vec![("state", "none".into())],
                Some(p) => vec![
                    (
                        "state",
                        if p.finished_at.is_some() {
                            "finished"
                        } else {
                            "running"
                        }
                        .into(),
                    ),
                    ("mode", format!("{:?}", p.mode).to_lowercase().into()),
                    ("rate_per_s", p.rate.into()),
                    ("bindings_total", p.bindings_total.into()),
                    ("bindings_released", p.bindings_released.into()),
                    ("bindings_confirmed", p.bindings_confirmed.into()),
                    ("bindings_failed", p.bindings_failed.into()),
                    ("rejected_integrity", p.rejected.0.into()),
                    ("rejected_provenance", p.rejected.1.into()),
                    ("rejected_liveness", p.rejected.2.into()),
                    ("subscriptions_total", p.subscriptions_total.into()),
                    (
                        "subscriptions_terminated",
                        p.subscriptions_terminated.into(),
                    ),
                ],
            };
            fields.extend([
                ("local_registers", sv.local_registers.into()),
                ("local_only_bindings", sv.local_only_bindings.into()),
                ("local_calls", sv.local_calls.into()),
                ("backup_calls", sv.backup_calls.into()),
                ("rejected_calls", sv.rejected_calls.into()),
                ("fail_fast", sv.fail_fast.into()),
                ("direct_in_dialog", sv.direct_in_dialog.into()),
                ("subscriptions_local_now", edge.local_subscriptions().into()),
                ("notifies", sv.notifies.into()),
                ("notifies_lost", sv.notifies_lost.into()),
                ("reregisters", sv.reregisters.into()),
            ]);
            Answer::ok(vec![Block::Fields {
                name: "resync",
                fields,
            }])
        }
        Command::Unknown(s) if s.is_empty() => Answer::error("empty command; try `help`"),
        Command::Unknown(s) => Answer::error(format!("unknown command {s:?}; try `help`")),
        other => Answer::not_available(other.name()),
    })
}

/// Store commands (may block on SQLite: call from a blocking thread).
pub fn answer_from_store(cmd: &Command, store: &Store) -> Answer {
    match cmd {
        Command::ShowStore => {
            let s = store.stats();
            Answer::ok(vec![Block::Fields {
                name: "store",
                fields: vec![
                    ("path", s.path.display().to_string().into()),
                    (
                        "schema",
                        format!("{}.{}", s.schema_version.0, s.schema_version.1).into(),
                    ),
                    ("commits", s.commits.into()),
                    ("commits_failed", s.commits_failed.into()),
                    ("writes", s.writes.into()),
                    ("groups", s.groups.into()),
                    ("largest_group", s.largest_group.into()),
                    ("quarantined", s.quarantined_total.into()),
                    ("writer_alive", s.writer_alive.into()),
                    (
                        "set_aside",
                        s.set_aside
                            .as_ref()
                            .map_or_else(|| "none".to_string(), |p| p.display().to_string())
                            .into(),
                    ),
                    (
                        "damaged",
                        s.damaged.clone().unwrap_or_else(|| "no".to_string()).into(),
                    ),
                    // What the last purge did, so a field tech can see that the
                    // routine task ran and what it met (the incident's purge crashed).
                    (
                        "last_purge",
                        s.last_purge
                            .as_ref()
                            .map_or_else(
                                || "not yet".to_string(),
                                |r| {
                                    format!(
                                        "{} purged, {} quarantined, {} unreadable in {} ms",
                                        r.purged,
                                        r.quarantined,
                                        r.unreadable,
                                        r.took.as_millis()
                                    )
                                },
                            )
                            .into(),
                    ),
                ],
            }])
        }
        Command::StoreCheck => match store.check() {
            Ok(r) => {
                let mut fields: Vec<(&'static str, Value)> = vec![
                    ("ok", r.ok.into()),
                    ("quick_check", r.quick_check.join("; ").into()),
                    ("quarantined_now", r.quarantined.into()),
                    ("quarantined_total", r.quarantined_total.into()),
                    ("took_ms", ms(r.took)),
                ];
                for (t, n) in &r.rows {
                    let name: &'static str = match t.as_str() {
                        "bindings" => "rows_bindings",
                        "subscriptions" => "rows_subscriptions",
                        "mwi" => "rows_mwi",
                        "events" => "rows_events",
                        _ => continue,
                    };
                    fields.push((name, (*n).into()));
                }
                let mut a = Answer::ok(vec![Block::Fields {
                    name: "check",
                    fields,
                }]);
                if !r.ok {
                    a.ok = false;
                    a.error = Some("integrity check failed".into());
                }
                a
            }
            Err(e) => Answer::error(format!("store check failed: {e}")),
        },
        Command::StoreQuarantine => match store.quarantine(50) {
            Ok(list) => Answer::ok(vec![Block::Table {
                name: "quarantine",
                table: Table {
                    columns: vec!["at", "table", "key", "reason"],
                    rows: list
                        .into_iter()
                        .map(|q| vec![q.at.into(), q.table.into(), q.key.into(), q.reason.into()])
                        .collect(),
                },
            }]),
            Err(e) => Answer::error(format!("cannot read quarantine: {e}")),
        },
        Command::ShowLog { count } => match store.events(count.unwrap_or(20).min(1000)) {
            Ok(list) => Answer::ok(vec![Block::Table {
                name: "log",
                table: Table {
                    columns: vec!["at", "kind", "detail"],
                    rows: list
                        .into_iter()
                        .map(|e| {
                            vec![
                                e.event.at.into(),
                                e.event.kind.into(),
                                e.event.detail.into(),
                            ]
                        })
                        .collect(),
                },
            }]),
            Err(e) => Answer::error(format!("cannot read the event log: {e}")),
        },
        other => Answer::not_available(other.name()),
    }
}

/// What running a console line needs besides the loop's state.
#[derive(Clone)]
pub struct Ctx {
    /// To the daemon's loop.
    pub to_loop: mpsc::Sender<ConsoleRequest>,
    /// The store, for store commands.
    pub store: Store,
    /// `[update]`, for `update status`.
    pub update: crate::update_cmd::UpdateConfig,
    /// `[board] profile`.
    pub board: String,
}

/// Serves the console on a Unix socket: one command per connection (see
/// `console_client` for the wire format).
pub async fn serve(listener: UnixListener, ctx: Ctx) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "console accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut rd = BufReader::new(rd).take_while_limit();
            let mut line = String::new();
            if rd.read_line(&mut line).await.is_err() {
                return;
            }
            let (answer, json) = run_line(&line, &ctx).await;
            let status = if answer.ok { "OK\n" } else { "ERR\n" };
            let mut out = String::from(status);
            out.push_str(&answer.render(json));
            if let Err(e) = wr.write_all(out.as_bytes()).await {
                debug!(error = %e, "console client went away");
            }
            let _ = wr.shutdown().await;
        });
    }
}

/// Runs one console line (also usable by the serial console).
pub async fn run_line(line: &str, ctx: &Ctx) -> (Answer, bool) {
    let Some(parsed) = holdline_console::command::parse_line(line) else {
        return (Answer::error("empty command; try `help`"), false);
    };
    let json = parsed.json;
    let cmd = parsed.command;
    let needs_store = matches!(
        cmd,
        Command::ShowStore
            | Command::StoreCheck
            | Command::StoreQuarantine
            | Command::ShowLog { .. }
    );
    let answer = if cmd == Command::UpdateStatus {
        let (update, board) = (ctx.update.clone(), ctx.board.clone());
        let res =
            tokio::task::spawn_blocking(move || crate::update_cmd::status(&update, &board)).await;
        match res {
            Ok(Ok(st)) => Answer::ok(vec![Block::Lines {
                name: "update",
                lines: st.render_text().lines().map(str::to_string).collect(),
            }]),
            Ok(Err(e)) => Answer::error(format!("update status: {e}")),
            Err(_) => Answer::error("internal error running the command"),
        }
    } else if needs_store {
        let store = ctx.store.clone();
        match tokio::task::spawn_blocking(move || answer_from_store(&cmd, &store)).await {
            Ok(a) => a,
            Err(_) => Answer::error("internal error running the command"),
        }
    } else {
        let (tx, rx) = oneshot::channel();
        if ctx
            .to_loop
            .send(ConsoleRequest {
                command: cmd,
                reply: tx,
            })
            .await
            .is_err()
        {
            return (Answer::error("daemon is shutting down"), json);
        }
        rx.await
            .unwrap_or_else(|_| Answer::error("daemon is shutting down"))
    };
    (answer, json)
}

/// Limits how much a console client can make us buffer for one line.
trait TakeLimit: Sized {
    fn take_while_limit(self) -> tokio::io::Take<Self>;
}

impl<R: tokio::io::AsyncBufRead + Unpin> TakeLimit for R {
    fn take_while_limit(self) -> tokio::io::Take<Self> {
        tokio::io::AsyncReadExt::take(self, 4096)
    }
}

/// Removes a stale socket file left by a previous run.
pub fn remove_stale(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok() {
        let _ = std::fs::remove_file(path);
    }
}

/// The serial console's bridge into the same command set (the board's
/// `hw` module drives the terminal; this runs the lines).
pub struct SerialExec {
    /// Console context.
    pub ctx: Ctx,
    /// Site name for the prompt.
    pub site: String,
    /// The cloud state the loop publishes.
    pub cloud: tokio::sync::watch::Receiver<&'static str>,
}

impl holdline_console::serial::Exec for SerialExec {
    fn run(
        &mut self,
        line: &str,
    ) -> impl std::future::Future<Output = holdline_console::serial::Reply> + Send {
        let ctx = self.ctx.clone();
        let line = line.to_string();
        async move {
            let (answer, json) = run_line(&line, &ctx).await;
            holdline_console::serial::Reply {
                text: answer.render(json),
                ok: answer.ok,
            }
        }
    }

    fn prompt(&mut self) -> holdline_console::serial::PromptInfo {
        holdline_console::serial::PromptInfo {
            site: self.site.clone(),
            cloud: (*self.cloud.borrow()).to_string(),
        }
    }
}
