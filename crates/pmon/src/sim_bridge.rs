//! `pmon sim bridge`: the simulator acting as a serial bridge, with simulated slaves behind
//! it in real time, serving `docs/protocol/serial-bridge.md` on a tty or pseudo-terminal
//! until SIGINT or SIGTERM. A laptop without slave boards can then test the whole serial
//! path: `pmon sim bridge --tty /dev/pts/3` on one end, `kind = "serial"` on the other.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use clap::Args;
use pmon_bus::bridge::{default_info, BridgeServer};
use pmon_sim::{ClockMode, Simulator};
use tracing::info;

use crate::cli::Common;
use crate::settings;

/// `pmon sim bridge`.
#[derive(Debug, Clone, Args)]
pub struct BridgeArgs {
    /// The serial port or pseudo-terminal to serve, e.g. /dev/pts/3 (`socat -d -d
    /// pty,raw,echo=0 pty,raw,echo=0` makes a connected pair).
    #[arg(long, value_name = "PATH")]
    pub tty: PathBuf,
    /// Line speed (ignored by pseudo-terminals).
    #[arg(long, default_value_t = 115_200, value_name = "BAUD")]
    pub baud: u32,
    /// Which simulated bus stands behind the bridge.
    #[arg(long, default_value_t = 0, value_name = "ID")]
    pub bus: u8,
    /// Fault injection: probability per frame, in each direction, that the line corrupts
    /// it (a request the bridge receives corrupted is answered REQUEST_CRC; a reply gets a
    /// bit flipped).
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub corrupt_rate: f64,
    /// Seed of the injected faults.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,
}

/// Serves until SIGINT or SIGTERM.
pub fn run(common: &Common, args: &BridgeArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.corrupt_rate) {
        return Err(anyhow!(
            "--corrupt-rate {} must lie in 0..=1",
            args.corrupt_rate
        ));
    }
    let resolved = settings::resolve(common)?;
    let (sim, description) = resolved.simulator.unwrap_or_else(|| {
        (
            pmon_sim::SimConfig::demo(settings::DEMO_CIRCUITS, 1),
            format!(
                "the simulator with {} demo circuits",
                settings::DEMO_CIRCUITS
            ),
        )
    });
    let (buses, control) = Simulator::new(&sim, ClockMode::RealTime)
        .context("simulator")?
        .into_parts();
    let bus_id = args.bus;
    let bus = buses
        .into_iter()
        .find(|(id, _)| *id == bus_id)
        .map(|(_, bus)| bus)
        .ok_or_else(|| anyhow!("the simulation has no bus {bus_id}"))?;
    let mut port = pmon_bus::bridge::tty::TtyPort::open(&args.tty, args.baud)
        .with_context(|| format!("cannot open {}", args.tty.display()))?;
    let reset = control.clone();
    let clock = control.clone();
    let mut server = BridgeServer::new(bus, default_info(sim.bus(bus_id).clock_hz))
        .with_reset(move |_| reset.recover_bus(bus_id).unwrap_or(false))
        .with_clock(move |_, hz| clock.set_clock_hz(bus_id, hz).ok())
        .with_faults(args.corrupt_rate, args.seed);

    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone())?;
    info!(tty = %args.tty.display(), bus = bus_id, corrupt_rate = args.corrupt_rate, "serial bridge serving {description}");
    server
        .serve(&mut port, &stop)
        .with_context(|| format!("serving {}", args.tty.display()))?;
    let stats = server.stats();
    info!(
        frames = stats.frames,
        executed = stats.executed,
        repeats = stats.repeats,
        bad_frames = stats.bad_frames,
        injected = stats.injected_request_faults + stats.injected_reply_faults,
        "serial bridge stopped"
    );
    Ok(())
}

/// Sets `stop` on the first SIGINT or SIGTERM; returns once the handlers are installed.
fn watch_signals(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let (ready, installed) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = ready.send(Err(error.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                #[cfg(unix)]
                {
                    use tokio::signal::unix::{signal, SignalKind};
                    let (mut terminate, mut interrupt) = match (
                        signal(SignalKind::terminate()),
                        signal(SignalKind::interrupt()),
                    ) {
                        (Ok(t), Ok(i)) => (t, i),
                        (Err(error), _) | (_, Err(error)) => {
                            let _ = ready.send(Err(error.to_string()));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    tokio::select! {
                        _ = terminate.recv() => info!("SIGTERM received, shutting down"),
                        _ = interrupt.recv() => info!("SIGINT received, shutting down"),
                    }
                }
                #[cfg(not(unix))]
                {
                    let _ = ready.send(Ok(()));
                    let _ = tokio::signal::ctrl_c().await;
                }
                stop.store(true, Ordering::Relaxed);
            });
        })
        .context("cannot start the signal thread")?;
    installed
        .recv()
        .map_err(|_| anyhow!("the signal thread ended early"))?
        .map_err(|error| anyhow!("cannot watch signals: {error}"))
}
