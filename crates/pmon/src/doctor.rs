//! `pmon doctor`: checks what a pmon setup needs and explains how to fix what is missing.
//!
//! Checks, in order: the configuration; I2C buses present, accessible and clocked right (or
//! the simulated buses with `--sim`/`--sim-config`); the slaves on each bus with identity and
//! firmware; the CRC error rate of a short sample of FIFO reads; the MQTT broker (TCP and
//! CONNACK); the data directory (create, write, fsync). Each check is a structured [`Check`]
//! ([`collect`]); [`render`] turns the [`Report`] into text. A WARN alone leaves the exit
//! status 0; any FAIL makes it 1.

mod fixes;
pub mod mqtt;
pub mod slaves;
pub mod storage;
pub mod system;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use pmon_bus::RetryPolicy;
use serde::Serialize;

use crate::buses::{self, Buses, HardwareBus, Link, OpenBus};
use crate::cli::Common;
use crate::settings;
pub use system::System;

/// `pmon doctor`'s options.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Check this I2C device (e.g. /dev/i2c-1) or only this configured bus (its id, e.g.
    /// i2c-1 or sim-0); repeatable. Default: every configured bus.
    #[arg(long = "bus", value_name = "DEVICE|ID")]
    pub buses: Vec<String>,
    /// FIFO reads per slave for the CRC error rate.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub samples: u32,
    /// Run only these checks (comma-separated); the configuration is always checked.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "CHECKS")]
    pub only: Vec<Area>,
    /// Seconds to wait for the broker.
    #[arg(long, value_name = "S", default_value_t = 3)]
    pub timeout: u64,
    /// Print only warnings and failures, nothing when all is well (for health checks).
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the report as JSON.
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
}

/// Groups of checks, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Area {
    /// I2C buses present, accessible, and their clock.
    I2c,
    /// Slaves on each bus and the CRC error rate.
    Slaves,
    /// The MQTT broker.
    Broker,
    /// The data directory.
    DataDir,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Not applicable or not checkable here (does not affect the exit status).
    Skip,
    /// Works, but deserves attention (does not affect the exit status).
    Warn,
    /// Broken: pmon cannot work like this (exit status 1).
    Fail,
}

impl Level {
    /// The label printed at the start of the line.
    pub fn label(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Skip => "SKIP",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked, e.g. "I2C buses" or "slaves on i2c-1".
    pub name: String,
    /// The outcome.
    pub level: Level,
    /// One line: what was found.
    pub summary: String,
    /// Further lines (slaves found, per-slave rates, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// How to fix it (for WARN and FAIL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    /// A check without details or fix.
    pub fn new(name: String, level: Level, summary: String) -> Check {
        Check {
            name,
            level,
            summary,
            details: Vec::new(),
            fix: None,
        }
    }

    /// Adds detail lines.
    pub fn with_details(mut self, details: Vec<String>) -> Check {
        self.details = details;
        self
    }

    /// Adds the fix.
    pub fn with_fix(mut self, fix: String) -> Check {
        self.fix = Some(fix);
        self
    }
}

/// Every check, in order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// Checks at `level`.
    pub fn count(&self, level: Level) -> usize {
        self.checks.iter().filter(|c| c.level == level).count()
    }

    /// Whether pmon can run: no check failed (warnings allowed).
    pub fn passed(&self) -> bool {
        self.count(Level::Fail) == 0
    }

    /// The check named `name`, if it ran.
    pub fn find(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    fn push(&mut self, check: Check) {
        self.checks.push(check);
    }
}

/// Everything the checks look at.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The config file, if one was named.
    pub config_path: Option<PathBuf>,
    /// Why the config file (or simulator file) could not be used; the checks then use the defaults.
    pub config_error: Option<String>,
    /// Hardware buses or the simulator.
    pub buses: Buses,
    /// `--bus` arguments.
    pub bus_args: Vec<String>,
    /// The broker URL.
    pub mqtt_url: String,
    /// Broker user name and password.
    pub credentials: Option<(String, String)>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// FIFO reads per slave.
    pub samples: u32,
    /// Retry policy for the bus.
    pub policy: RetryPolicy,
    /// Only these areas (all when empty).
    pub only: Vec<Area>,
    /// Broker timeout.
    pub timeout: Duration,
    /// The machine.
    pub system: System,
}

impl Inputs {
    /// Reads the configuration as every command does; a broken file becomes a failed check
    /// instead of an error, and the other checks run with the defaults.
    pub fn from_command_line(
        common: &Common,
        args: &DoctorArgs,
    ) -> Result<Inputs, settings::SettingsError> {
        let mut config_error = None;
        let resolved = match settings::resolve(common) {
            Ok(resolved) => resolved,
            Err(error) => {
                config_error = Some(error.to_string());
                let fallback = Common {
                    config: None,
                    sim_config: None,
                    ..common.clone()
                };
                // Without files nothing is read, so this does not fail in practice.
                settings::resolve(&fallback).or_else(|_| settings::resolve(&Common::default()))?
            }
        };
        let mut buses = Buses::from_settings(common, &resolved);
        if config_error.is_some() && common.sim_config.is_some() {
            // The simulator file was the broken one: do not silently check real buses instead.
            buses = Buses::Hardware(Vec::new());
        }
        Ok(Inputs {
            config_path: common.config.clone(),
            config_error,
            buses,
            bus_args: args.buses.clone(),
            mqtt_url: resolved.mqtt.url.clone(),
            credentials: resolved.mqtt.credentials.clone(),
            data_dir: resolved.data_dir.clone(),
            samples: args.samples,
            policy: RetryPolicy {
                attempts: resolved.acquisition.retries,
                ..RetryPolicy::default()
            },
            only: args.only.clone(),
            timeout: Duration::from_secs(args.timeout.max(1)),
            system: System::default(),
        })
    }

    fn runs(&self, area: Area) -> bool {
        self.only.is_empty() || self.only.contains(&area)
    }
}

/// Runs every check.
pub fn collect(inputs: &Inputs) -> Report {
    let mut report = Report::default();
    report.push(config_check(inputs));
    let wants_buses = inputs.runs(Area::I2c) || inputs.runs(Area::Slaves);
    if wants_buses {
        let opened = match &inputs.buses {
            Buses::Simulated {
                config,
                description,
            } => simulated_checks(inputs, config, description, &mut report),
            Buses::Hardware(configured) => physical_checks(inputs, configured, &mut report),
        };
        if inputs.runs(Area::Slaves) {
            slave_checks(inputs, opened, &mut report);
        }
    }
    if inputs.runs(Area::Broker) {
        report.push(broker_check(inputs));
    }
    if inputs.runs(Area::DataDir) {
        report.push(storage::check(&inputs.data_dir, &inputs.system));
    }
    report
}

fn config_check(inputs: &Inputs) -> Check {
    let name = "configuration".to_string();
    if let Some(error) = &inputs.config_error {
        return Check::new(name, Level::Fail, error.clone()).with_fix(
            "Correct the file at the line named above: `pmon config example` prints every key \
             with its default (`--simulator` for a simulator file). The other checks ran with \
             the defaults."
                .into(),
        );
    }
    let source = match &inputs.buses {
        Buses::Simulated { description, .. } => description.clone(),
        Buses::Hardware(buses) if buses.is_empty() => "no [[acquisition.bus]] configured".into(),
        Buses::Hardware(buses) => format!(
            "{} I2C bus{} configured ({})",
            buses.len(),
            if buses.len() == 1 { "" } else { "es" },
            buses
                .iter()
                .map(|bus| bus.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let file = match &inputs.config_path {
        Some(path) => format!("{} read", path.display()),
        None => "no config file, defaults apply (--config FILE or PMON_CONFIG names one)".into(),
    };
    Check::new(name, Level::Ok, format!("{file}; {source}"))
}

/// A bus to scan: its id and its device below the system root.
struct Target {
    id: String,
    /// As configured or given, for messages.
    shown: PathBuf,
    /// Where it is on this machine (below the system root).
    path: PathBuf,
}

/// Linux adapters get the i2c-dev checks, serial bridges their own; `--bus` picks among both.
fn physical_checks(
    inputs: &Inputs,
    configured: &[HardwareBus],
    report: &mut Report,
) -> Vec<OpenBus> {
    let names = |bus: &HardwareBus, arg: &str| arg == bus.id || bus.path.as_os_str() == arg;
    let is_serial = |bus: &HardwareBus| matches!(bus.link, Link::Serial { .. });
    let serial: Vec<&HardwareBus> = configured
        .iter()
        .filter(|bus| is_serial(bus))
        .filter(|bus| inputs.bus_args.is_empty() || inputs.bus_args.iter().any(|a| names(bus, a)))
        .collect();
    let linux: Vec<(String, PathBuf)> = configured
        .iter()
        .filter(|bus| !is_serial(bus))
        .map(|bus| (bus.id.clone(), bus.path.clone()))
        .collect();
    let linux_args: Vec<String> = inputs
        .bus_args
        .iter()
        .filter(|arg| {
            !configured
                .iter()
                .any(|bus| is_serial(bus) && names(bus, arg))
        })
        .cloned()
        .collect();
    // A setup of serial bridges only needs no /dev/i2c-*.
    let check_linux = if inputs.bus_args.is_empty() {
        !linux.is_empty() || serial.is_empty()
    } else {
        !linux_args.is_empty()
    };
    let mut opened = if check_linux {
        hardware_checks(inputs, &linux, &linux_args, report)
    } else {
        Vec::new()
    };
    for bus in serial {
        match buses::open_configured(bus, inputs.policy) {
            Ok(open) => {
                let mut summary = format!("{} answers", bus.path.display());
                if let Some(note) = &open.note {
                    summary = format!("{summary}: {note}");
                }
                report.push(Check::new(
                    format!("serial bridge {}", bus.id),
                    Level::Ok,
                    summary,
                ));
                opened.push(open);
            }
            Err(error) => report.push(
                Check::new(
                    format!("serial bridge {}", bus.id),
                    Level::Fail,
                    error.to_string(),
                )
                .with_fix(
                    "Check that the bridge is plugged in (`ls /dev/ttyUSB* /dev/ttyACM*`), runs \
                     pmon's bridge firmware (deploy/firmware/) at the configured baud rate, and \
                     that the user may open the port: `sudo usermod -aG dialout $USER`, then log \
                     in again (the acquisition's systemd unit has SupplementaryGroups=dialout)."
                        .into(),
                ),
            ),
        }
    }
    opened
}

fn hardware_checks(
    inputs: &Inputs,
    configured: &[(String, PathBuf)],
    bus_args: &[String],
    report: &mut Report,
) -> Vec<OpenBus> {
    let system = &inputs.system;
    let target = |id: &str, path: &Path| Target {
        id: id.to_string(),
        shown: path.to_path_buf(),
        path: system.path(&path.to_string_lossy()),
    };
    let mut targets: Vec<Target> = Vec::new();
    for arg in bus_args {
        if let Some((id, path)) = configured
            .iter()
            .find(|(id, path)| id == arg || path.as_os_str() == arg.as_str())
        {
            targets.push(target(id, path));
        } else if arg.contains('/') {
            let path = Path::new(arg);
            targets.push(target(&buses::id_for_path(path), path));
        } else {
            report.push(
                Check::new(
                    "I2C buses".into(),
                    Level::Fail,
                    format!("--bus {arg}: no configured bus has this id"),
                )
                .with_fix(format!(
                    "Name a configured bus ({}) or a device such as /dev/i2c-1.",
                    if configured.is_empty() {
                        "none is configured".to_string()
                    } else {
                        configured
                            .iter()
                            .map(|(id, _)| id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )),
            );
        }
    }
    if bus_args.is_empty() {
        targets = configured
            .iter()
            .map(|(id, path)| target(id, path))
            .collect();
    }
    let devices = system.i2c_devices();
    let adapters = system.adapters();
    let mut context: Vec<String> = Vec::new();
    if let Some(model) = system.model() {
        context.push(format!("board: {model}"));
    }
    if let Some(boot) = system.boot_config() {
        context.push(match boot.i2c_arm {
            Some(true) => format!("{}: dtparam=i2c_arm=on", boot.path.display()),
            Some(false) => format!("{}: dtparam=i2c_arm=off", boot.path.display()),
            None => format!("{}: no dtparam=i2c_arm line", boot.path.display()),
        });
        if let Some(baud) = boot.baudrate {
            context.push(format!(
                "{}: dtparam=i2c_arm_baudrate={baud}",
                boot.path.display()
            ));
        }
        for overlay in &boot.overlays {
            context.push(format!("{}: dtoverlay={overlay}", boot.path.display()));
        }
    }
    let found: Vec<String> = devices.iter().map(|d| shown_path(system, d)).collect();
    if !found.is_empty() {
        context.push(format!("devices: {}", found.join(", ")));
    } else if !adapters.is_empty() {
        context.push(format!(
            "kernel adapters without device files: {}",
            adapters.join(", ")
        ));
    }
    let enable_fix = |extra: bool| {
        let mut fix = fixes::ENABLE_I2C.to_string();
        if devices.is_empty() && !adapters.is_empty() {
            fix = format!("{} {fix}", fixes::LOAD_I2C_DEV);
        }
        if extra {
            fix = format!("{fix} {}", fixes::EXTRA_BUSES);
        }
        fix
    };

    // Presence.
    let mut accessible: Vec<&Target> = Vec::new();
    let found_targets: Vec<Target>;
    let checked: Vec<&Target> = if targets.is_empty() {
        if devices.is_empty() {
            report.push(
                Check::new(
                    "I2C buses".into(),
                    Level::Fail,
                    "there is no /dev/i2c-* device on this machine".into(),
                )
                .with_details(context)
                .with_fix(enable_fix(false)),
            );
            for name in ["I2C access", "I2C bus clock", "slaves", "CRC error rate"] {
                report.push(Check::new(
                    name.into(),
                    Level::Skip,
                    "no I2C bus to check".into(),
                ));
            }
            return Vec::new();
        }
        let example = found.first().cloned().unwrap_or_default();
        report.push(
            Check::new(
                "I2C buses".into(),
                Level::Warn,
                format!(
                    "found {}, but no bus is configured: `pmon up` and `pmon acquire` would run \
                     the simulator",
                    found.join(", ")
                ),
            )
            .with_details(context)
            .with_fix(format!(
                "Add each bus your slaves are on to the config file:\n[[acquisition.bus]]\nid = \
                 \"{}\"\npath = \"{example}\"\nTo look for slaves first: `pmon doctor --bus {example}`.",
                buses::id_for_path(Path::new(&example))
            )),
        );
        found_targets = devices
            .iter()
            .map(|device| Target {
                id: buses::id_for_path(device),
                shown: PathBuf::from(shown_path(system, device)),
                path: device.clone(),
            })
            .collect();
        found_targets.iter().collect()
    } else {
        let missing: Vec<&Target> = targets.iter().filter(|t| !t.path.exists()).collect();
        if missing.is_empty() {
            let list: Vec<String> = targets
                .iter()
                .map(|t| format!("{} ({})", t.id, t.shown.display()))
                .collect();
            report.push(
                Check::new(
                    "I2C buses".into(),
                    Level::Ok,
                    format!("present: {}", list.join(", ")),
                )
                .with_details(context),
            );
        } else {
            let list: Vec<String> = missing
                .iter()
                .map(|t| format!("{} ({})", t.id, t.shown.display()))
                .collect();
            let extra = missing
                .iter()
                .any(|t| system::bus_number(&t.shown).is_some_and(|n| (3..=6).contains(&n)));
            report.push(
                Check::new(
                    "I2C buses".into(),
                    Level::Fail,
                    format!("missing: {} does not exist", list.join(", ")),
                )
                .with_details(context)
                .with_fix(enable_fix(extra)),
            );
        }
        targets.iter().filter(|t| t.path.exists()).collect()
    };

    // Access and clock, for every bus that exists.
    for target in &checked {
        let check = access_check(system, target);
        if check.level == Level::Ok {
            accessible.push(target);
        }
        report.push(check);
    }
    for target in &checked {
        report.push(clock_check(system, target));
    }

    // Only configured (or named) buses are scanned: probing unknown buses can disturb devices.
    if targets.is_empty() {
        report.push(Check::new(
            "slaves".into(),
            Level::Skip,
            "no bus configured to scan (name one with --bus DEVICE)".into(),
        ));
        return Vec::new();
    }
    let mut opened = Vec::new();
    for target in accessible {
        match buses::open_hardware(&target.id, &target.path, inputs.policy) {
            Ok(bus) => opened.push(bus),
            Err(error) => report.push(
                Check::new(
                    format!("slaves on {}", target.id),
                    Level::Fail,
                    error.to_string(),
                )
                .with_fix(
                    "The file exists and opens, but the kernel's i2c-dev driver does not serve it: \
                     it is not an I2C adapter. Name a /dev/i2c-N device (`ls /dev/i2c-*`)."
                        .into(),
                ),
            ),
        }
    }
    opened
}

fn shown_path(system: &System, device: &Path) -> String {
    let root = system.path("/");
    match device.strip_prefix(&root) {
        Ok(relative) => format!("/{}", relative.display()),
        Err(_) => device.display().to_string(),
    }
}

fn access_check(system: &System, target: &Target) -> Check {
    use std::os::unix::fs::MetadataExt;
    let name = format!("I2C access {}", target.id);
    let owner = std::fs::metadata(&target.path).ok().map(|meta| {
        let group = system
            .group_name(meta.gid())
            .unwrap_or_else(|| meta.gid().to_string());
        (group, meta.gid(), meta.mode() & 0o777)
    });
    let described = match &owner {
        Some((group, _, mode)) => format!("group {group}, mode {mode:04o}"),
        None => "owner unknown".into(),
    };
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&target.path)
    {
        Ok(_) => Check::new(
            name,
            Level::Ok,
            format!("{}: read/write ({described})", target.shown.display()),
        ),
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            let mut details = Vec::new();
            if let Some((group, gid, _)) = &owner {
                let user = std::env::var("USER").unwrap_or_default();
                let in_process = system.process_groups().contains(gid);
                let listed = !user.is_empty() && system.group_members(group).contains(&user);
                details.push(if in_process {
                    format!("this process is in group {group}, yet access is denied: check the mode")
                } else if listed {
                    format!(
                        "{user} is in group {group} in /etc/group, but this session started before: \
                         log out and back in (or `newgrp {group}`)"
                    )
                } else {
                    format!("this process is not in group {group}")
                });
            }
            Check::new(
                name,
                Level::Fail,
                format!(
                    "{}: permission denied ({described})",
                    target.shown.display()
                ),
            )
            .with_details(details)
            .with_fix(fixes::ACCESS.into())
        }
        Err(error) => Check::new(
            name,
            Level::Fail,
            format!("{}: cannot open: {error}", target.shown.display()),
        )
        .with_fix(fixes::ENABLE_I2C.into()),
    }
}

fn clock_check(system: &System, target: &Target) -> Check {
    use system::Controller;
    let name = format!("I2C bus clock {}", target.id);
    let Some(number) = system::bus_number(&target.shown) else {
        return Check::new(
            name,
            Level::Skip,
            format!("{}: not an i2c-N device", target.shown.display()),
        );
    };
    let adapter = system.adapter(number);
    let controller = adapter.controller();
    let boot = system.boot_config();
    let mut details = Vec::new();
    if let Some(adapter_name) = &adapter.name {
        details.push(format!("adapter: {adapter_name}"));
    }
    // The kernel's figure first; a Pi's config.txt for the main bus otherwise.
    let (clock, origin) = match (adapter.clock_hz, &boot) {
        (Some(hz), _) => (Some(hz), "device tree"),
        (None, Some(boot)) if number == 1 && system.is_raspberry_pi() => (
            Some(boot.baudrate.unwrap_or(100_000)),
            if boot.baudrate.is_some() {
                "config.txt"
            } else {
                "the Pi's default"
            },
        ),
        _ => (None, ""),
    };
    let on_bcm = controller == Controller::Bcm2835
        || (controller == Controller::Other
            && adapter.name.is_none()
            && system.is_raspberry_pi()
            && !system.model().is_some_and(|m| m.contains("Pi 5")));
    let Some(hz) = clock else {
        return Check::new(
            name,
            Level::Skip,
            "the kernel does not report this adapter's clock".to_string(),
        )
        .with_details(details);
    };
    let khz = f64::from(hz) / 1000.0;
    let (level, summary, fix) = if on_bcm && hz > 100_000 {
        (
            Level::Warn,
            format!(
                "{khz} kHz ({origin}) on the Pi's BCM2835 controller: too fast for ATmega \
                 slaves, which stretch the clock"
            ),
            Some(fixes::CLOCK_STRETCHING.to_string()),
        )
    } else if on_bcm {
        (
            Level::Ok,
            format!(
                "{khz} kHz ({origin}); the BCM2835 controller mishandles clock stretching, so \
                 keep it at 100 kHz or below"
            ),
            None,
        )
    } else if controller == Controller::Gpio {
        (
            Level::Ok,
            format!("{khz} kHz ({origin}), bit-banged i2c-gpio: honours clock stretching"),
            None,
        )
    } else if hz > 400_000 {
        (
            Level::Warn,
            format!("{khz} kHz ({origin}): above the ATmega328P's 400 kHz"),
            Some(
                "The ATmega328P's TWI is specified up to 400 kHz: lower the adapter's clock \
                 (its device-tree clock-frequency)."
                    .to_string(),
            ),
        )
    } else {
        let note = if controller == Controller::DesignWare {
            " (Pi 5 RP1 controller: not known to share the BCM2835's clock-stretching defect)"
        } else {
            ""
        };
        (Level::Ok, format!("{khz} kHz ({origin}){note}"), None)
    };
    let check = Check::new(name, level, summary).with_details(details);
    match fix {
        Some(fix) => check.with_fix(fix),
        None => check,
    }
}

fn simulated_checks(
    inputs: &Inputs,
    config: &pmon_sim::SimConfig,
    description: &str,
    report: &mut Report,
) -> Vec<OpenBus> {
    let mut opened = match buses::open_simulated(config, inputs.policy) {
        Ok(opened) => opened,
        Err(error) => {
            report.push(Check::new(
                "I2C buses".into(),
                Level::Fail,
                format!("the simulator cannot start: {error}"),
            ));
            return Vec::new();
        }
    };
    if !inputs.bus_args.is_empty() {
        opened.retain(|bus| {
            inputs
                .bus_args
                .iter()
                .any(|arg| *arg == bus.id || bus.id.strip_prefix("sim-") == Some(arg.as_str()))
        });
    }
    if inputs.runs(Area::I2c) {
        let per_bus: Vec<String> = config
            .bus_ids()
            .into_iter()
            .map(|id| {
                let slaves = config.slaves.iter().filter(|s| s.bus == id).count();
                format!(
                    "{}: {slaves} simulated slave{}",
                    buses::sim_id(id),
                    if slaves == 1 { "" } else { "s" }
                )
            })
            .collect();
        report.push(
            Check::new(
                "I2C buses".into(),
                if opened.is_empty() {
                    Level::Fail
                } else {
                    Level::Ok
                },
                format!("{description}; /dev/i2c-* not checked"),
            )
            .with_details(per_bus),
        );
        for bus in &opened {
            let hz = bus.simulated_clock_hz.unwrap_or(0);
            report.push(Check::new(
                format!("I2C bus clock {}", bus.id),
                Level::Ok,
                if hz == 0 {
                    "simulated, infinitely fast wire".to_string()
                } else {
                    format!("simulated {} kHz", f64::from(hz) / 1000.0)
                },
            ));
        }
    }
    opened
}

fn slave_checks(inputs: &Inputs, opened: Vec<OpenBus>, report: &mut Report) {
    let mut serials = BTreeMap::new();
    for mut bus in opened {
        let scan = slaves::scan(bus.master.as_mut());
        report.push(slaves::slaves_check(&bus.id, &scan, &mut serials));
        if scan.slaves.is_empty() || inputs.samples == 0 {
            report.push(Check::new(
                format!("CRC error rate on {}", bus.id),
                Level::Skip,
                "no slave to sample".to_string(),
            ));
            continue;
        }
        let samples: Vec<(u8, slaves::Sample)> = scan
            .slaves
            .keys()
            .map(|&address| {
                (
                    address,
                    slaves::sample(bus.master.as_mut(), address, inputs.samples),
                )
            })
            .collect();
        report.push(slaves::crc_check(
            &bus.id,
            &samples,
            bus.simulated_clock_hz.is_some(),
        ));
    }
    if let Some(check) = slaves::duplicate_serials_check(&serials) {
        report.push(check);
    }
}

fn broker_check(inputs: &Inputs) -> Check {
    use mqtt::ProbeError;
    let name = "MQTT broker".to_string();
    let credentials = inputs
        .credentials
        .as_ref()
        .map(|(user, password)| (user.as_str(), password.as_str()));
    match mqtt::probe(&inputs.mqtt_url, credentials, inputs.timeout) {
        Ok(addr) => Check::new(
            name,
            Level::Ok,
            format!(
                "{} accepted an MQTT connection (CONNACK from {addr})",
                inputs.mqtt_url
            ),
        ),
        Err(error) => {
            let fix = match &error {
                ProbeError::Url(_) => {
                    "Set the broker URL to mqtt://HOST:PORT with --mqtt-url, PMON_MQTT_URL or \
                     `[mqtt] url`."
                        .to_string()
                }
                ProbeError::Resolve { .. } => fixes::BROKER_HOST.to_string(),
                ProbeError::Refused(_) => fixes::BROKER_DOWN.to_string(),
                ProbeError::Timeout { .. } | ProbeError::Connect { .. } => {
                    fixes::BROKER_TIMEOUT.to_string()
                }
                ProbeError::Closed(_) => format!(
                    "The broker hung up on the CONNECT: it refuses this client (credentials, too \
                     many connections) or is not an MQTT 3.1.1 broker. {}",
                    fixes::BROKER_CREDENTIALS
                ),
                ProbeError::NotMqtt { .. } => format!(
                    "Another program listens on that port. {}",
                    fixes::BROKER_DOWN
                ),
                ProbeError::Refusal { code: 4 | 5 } => fixes::BROKER_CREDENTIALS.to_string(),
                ProbeError::Refusal { .. } => {
                    "The broker is up but refuses sessions now: check its log.".to_string()
                }
            };
            Check::new(name, Level::Fail, format!("{}: {error}", inputs.mqtt_url)).with_fix(fix)
        }
    }
}

const WIDTH: usize = 100;

fn wrap(out: &mut dyn Write, first: &str, rest: &str, text: &str) -> std::io::Result<()> {
    for (index, paragraph) in text.split('\n').enumerate() {
        let mut line = if index == 0 {
            first.to_string()
        } else {
            rest.to_string()
        };
        let mut empty = true;
        for word in paragraph.split_whitespace() {
            if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
                writeln!(out, "{line}")?;
                line = rest.to_string();
                empty = true;
            }
            if !empty {
                line.push(' ');
            }
            line.push_str(word);
            empty = false;
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Prints the report: one line per check (`LEVEL name: summary`), indented details, an
/// indented `fix:` paragraph for warnings and failures, and a summary line. `quiet` prints
/// only warnings and failures, and no summary.
pub fn render(report: &Report, quiet: bool, out: &mut dyn Write) -> std::io::Result<()> {
    for check in &report.checks {
        if quiet && matches!(check.level, Level::Ok | Level::Skip) {
            continue;
        }
        let head = format!("{:<5} {}: ", check.level.label(), check.name);
        wrap(out, &head, "      ", &check.summary)?;
        for detail in &check.details {
            wrap(out, "      - ", "        ", detail)?;
        }
        if let (Some(fix), Level::Warn | Level::Fail) = (&check.fix, check.level) {
            wrap(out, "      fix: ", "           ", fix)?;
        }
    }
    if quiet {
        return Ok(());
    }
    let (ok, warn, fail, skip) = (
        report.count(Level::Ok),
        report.count(Level::Warn),
        report.count(Level::Fail),
        report.count(Level::Skip),
    );
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    writeln!(out)?;
    let line = if fail > 0 {
        format!(
            "summary: {} failed, {}, {ok} OK, {skip} skipped. pmon is not ready: fix the FAIL \
             lines above, then run `pmon doctor` again (exit status 1).",
            plural(fail, "check"),
            plural(warn, "warning")
        )
    } else if warn > 0 {
        format!(
            "summary: {ok} OK, {}, {skip} skipped. pmon can run; the warnings say what would \
             make it better (exit status 0).",
            plural(warn, "warning")
        )
    } else {
        format!("summary: {ok} OK, {skip} skipped. pmon is ready (exit status 0).")
    };
    wrap(out, "", "         ", &line)
}

/// A report with failures: the binary exits with status 1.
#[derive(Debug, thiserror::Error)]
#[error("doctor: {failed} of {total} checks failed (see above)")]
pub struct DoctorFailed {
    /// Failed checks.
    pub failed: usize,
    /// All checks.
    pub total: usize,
}

/// `pmon doctor`: collects, prints, and fails when any check failed.
pub fn run(common: &Common, args: &DoctorArgs) -> anyhow::Result<()> {
    let inputs = Inputs::from_command_line(common, args)?;
    let report = collect(&inputs);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        if !args.quiet {
            let mut what = Vec::new();
            if inputs.runs(Area::I2c) || inputs.runs(Area::Slaves) {
                what.push(match &inputs.buses {
                    Buses::Simulated { .. } => "the simulated buses".to_string(),
                    Buses::Hardware(_) => "this machine's I2C buses".to_string(),
                });
            }
            if inputs.runs(Area::Broker) {
                what.push(format!("the broker at {}", inputs.mqtt_url));
            }
            if inputs.runs(Area::DataDir) {
                what.push(format!("the data directory {}", inputs.data_dir.display()));
            }
            writeln!(
                out,
                "pmon doctor {}: checking the configuration, {}\n",
                env!("CARGO_PKG_VERSION"),
                what.join(", ")
            )?;
        }
        render(&report, args.quiet, &mut out)?;
    }
    out.flush()?;
    if report.passed() {
        Ok(())
    } else {
        Err(DoctorFailed {
            failed: report.count(Level::Fail),
            total: report.checks.len(),
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine below a temporary root.
    struct Machine {
        dir: tempfile::TempDir,
    }

    impl Machine {
        fn new() -> Machine {
            Machine {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, path: &str, bytes: &[u8]) -> &Machine {
            let path = self.dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
            self
        }

        /// A Raspberry Pi 4 with /dev/i2c-1 on the BCM2835 controller at `hz`.
        fn pi(&self, hz: u32) -> &Machine {
            self.write(
                "proc/device-tree/model",
                b"Raspberry Pi 4 Model B Rev 1.4\0",
            )
            .write("boot/firmware/config.txt", b"dtparam=i2c_arm=on\n")
            .write("dev/i2c-1", b"")
            .write(
                "sys/class/i2c-adapter/i2c-1/name",
                b"bcm2835 (i2c@7e804000)\n",
            )
            .write(
                "sys/class/i2c-adapter/i2c-1/of_node/clock-frequency",
                &hz.to_be_bytes(),
            )
        }

        fn inputs(&self, buses: Buses, only: &[Area]) -> Inputs {
            Inputs {
                config_path: None,
                config_error: None,
                buses,
                bus_args: Vec::new(),
                mqtt_url: "mqtt://127.0.0.1:9".into(),
                credentials: None,
                data_dir: self.dir.path().join("data"),
                samples: 20,
                policy: RetryPolicy::default(),
                only: only.to_vec(),
                timeout: Duration::from_secs(1),
                system: System::at(self.dir.path()),
            }
        }
    }

    fn level(report: &Report, name: &str) -> Level {
        report
            .find(name)
            .unwrap_or_else(|| panic!("no check {name:?} in {report:#?}"))
            .level
    }

    fn text(report: &Report) -> String {
        let mut out = Vec::new();
        render(report, false, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_machine_without_i2c_fails_with_the_way_to_enable_it() {
        let machine = Machine::new();
        let report = collect(&machine.inputs(Buses::Hardware(Vec::new()), &[Area::I2c]));
        let buses = report.find("I2C buses").unwrap();
        assert_eq!(buses.level, Level::Fail);
        assert!(buses.summary.contains("/dev/i2c-*"));
        let fix = buses.fix.as_deref().unwrap();
        assert!(
            fix.contains("dtparam=i2c_arm=on") && fix.contains("raspi-config"),
            "{fix}"
        );
        assert!(fix.contains("modprobe i2c-dev"), "{fix}");
        assert_eq!(level(&report, "slaves"), Level::Skip);
        assert!(!report.passed());
    }

    #[test]
    fn adapters_without_device_files_point_to_i2c_dev() {
        let machine = Machine::new();
        machine.write(
            "sys/class/i2c-adapter/i2c-1/name",
            b"bcm2835 (i2c@7e804000)\n",
        );
        let report = collect(&machine.inputs(Buses::Hardware(Vec::new()), &[Area::I2c]));
        let buses = report.find("I2C buses").unwrap();
        assert!(buses
            .fix
            .as_deref()
            .unwrap()
            .starts_with("The kernel has I2C adapters"));
        assert!(
            buses.details.iter().any(|d| d.contains("i2c-1")),
            "{buses:?}"
        );
    }

    #[test]
    fn a_pi_at_400_khz_is_warned_about_clock_stretching() {
        let machine = Machine::new();
        machine.pi(400_000);
        let report = collect(&machine.inputs(Buses::Hardware(Vec::new()), &[Area::I2c]));
        let buses = report.find("I2C buses").unwrap();
        assert_eq!(
            buses.level,
            Level::Warn,
            "found but not configured: {buses:?}"
        );
        assert!(buses
            .fix
            .as_deref()
            .unwrap()
            .contains("[[acquisition.bus]]"));
        assert!(buses.details.iter().any(|d| d.contains("Raspberry Pi 4")));
        assert_eq!(level(&report, "I2C access i2c-1"), Level::Ok);
        let clock = report.find("I2C bus clock i2c-1").unwrap();
        assert_eq!(clock.level, Level::Warn);
        assert!(clock.summary.starts_with("400 kHz"), "{}", clock.summary);
        let fix = clock.fix.as_deref().unwrap();
        for needle in [
            "#254",
            "#4884",
            "i2c_arm_baudrate=100000",
            "i2c-gpio",
            "CRC",
        ] {
            assert!(fix.contains(needle), "{needle} missing from {fix}");
        }
        assert!(report.passed(), "warnings alone pass");
    }

    #[test]
    fn a_pi_at_100_khz_is_fine_and_the_default_clock_comes_from_config_txt() {
        let machine = Machine::new();
        machine.pi(100_000);
        let report = collect(&machine.inputs(Buses::Hardware(Vec::new()), &[Area::I2c]));
        assert_eq!(level(&report, "I2C bus clock i2c-1"), Level::Ok);

        let machine = Machine::new();
        machine
            .write(
                "proc/device-tree/model",
                b"Raspberry Pi 3 Model B Plus Rev 1.3\0",
            )
            .write(
                "boot/config.txt",
                b"dtparam=i2c_arm=on,i2c_arm_baudrate=400000\n",
            )
            .write("dev/i2c-1", b"");
        let report = collect(&machine.inputs(Buses::Hardware(Vec::new()), &[Area::I2c]));
        let clock = report.find("I2C bus clock i2c-1").unwrap();
        assert_eq!(clock.level, Level::Warn, "{clock:?}");
        assert!(clock.summary.contains("config.txt"), "{}", clock.summary);
    }

    #[test]
    fn a_missing_extra_bus_points_to_its_overlay() {
        let machine = Machine::new();
        machine.pi(100_000);
        let configured = vec![
            HardwareBus::linux("i2c-1", "/dev/i2c-1"),
            HardwareBus::linux("i2c-3", "/dev/i2c-3"),
        ];
        let report = collect(&machine.inputs(Buses::Hardware(configured), &[Area::I2c]));
        let buses = report.find("I2C buses").unwrap();
        assert_eq!(buses.level, Level::Fail);
        assert!(buses.summary.contains("/dev/i2c-3"), "{}", buses.summary);
        assert!(buses.fix.as_deref().unwrap().contains("dtoverlay=i2c3"));
        assert_eq!(level(&report, "I2C access i2c-1"), Level::Ok);
    }

    #[test]
    fn a_setup_of_serial_bridges_needs_no_i2c_devices() {
        let machine = Machine::new();
        let bridge = HardwareBus {
            id: "usb-bridge".into(),
            path: machine.dir.path().join("ttyUSB-missing"),
            link: Link::Serial {
                baud: 115_200,
                timeout_ms: 100,
            },
        };
        let report = collect(&machine.inputs(Buses::Hardware(vec![bridge]), &[Area::I2c]));
        assert!(report.find("I2C buses").is_none(), "{report:#?}");
        let check = report.find("serial bridge usb-bridge").unwrap();
        assert_eq!(check.level, Level::Fail);
        assert!(
            check.summary.contains("ttyUSB-missing"),
            "{}",
            check.summary
        );
        assert!(check.fix.as_deref().unwrap().contains("dialout"));
    }

    #[test]
    fn an_unknown_bus_id_is_a_failure() {
        let machine = Machine::new();
        let mut inputs = machine.inputs(Buses::Hardware(Vec::new()), &[Area::I2c]);
        inputs.bus_args = vec!["i2c-9".into()];
        let report = collect(&inputs);
        let buses = report.find("I2C buses").unwrap();
        assert_eq!(buses.level, Level::Fail);
        assert!(buses.summary.contains("i2c-9"));
    }

    fn simulated(corrupt_rate: f64) -> Buses {
        let mut config = pmon_sim::SimConfig::demo(3, 1);
        config.buses = vec![pmon_sim::BusConfig {
            corrupt_rate,
            ..pmon_sim::BusConfig::new(0)
        }];
        Buses::Simulated {
            config,
            description: "the simulator".into(),
        }
    }

    #[test]
    fn simulated_slaves_are_listed_with_identity_and_firmware() {
        let machine = Machine::new();
        let report = collect(&machine.inputs(simulated(0.0), &[Area::I2c, Area::Slaves]));
        assert!(report.passed(), "{}", text(&report));
        let slaves = report.find("slaves on sim-0").unwrap();
        assert_eq!(slaves.summary, "3 pmon slaves found at 0x10, 0x11, 0x12");
        assert!(slaves.details[0].contains("circuit 504d0010"));
        assert!(slaves.details[0].contains("firmware 0.1.0"));
        let crc = report.find("CRC error rate on sim-0").unwrap();
        assert_eq!(crc.level, Level::Ok);
        assert!(
            crc.summary
                .starts_with("0.00 % (0 CRC errors in 60 transfers"),
            "{}",
            crc.summary
        );
        assert!(report.find("MQTT broker").is_none(), "not asked for");
    }

    #[test]
    fn a_noisy_simulated_bus_warns_with_its_rate() {
        let machine = Machine::new();
        // One bit in ~100 bytes: about a third of the 38-byte transfers fail their CRC.
        let report = collect(&machine.inputs(simulated(0.01), &[Area::Slaves]));
        let crc = report.find("CRC error rate on sim-0").unwrap();
        assert_ne!(crc.level, Level::Ok, "{crc:?}");
        assert!(crc.fix.as_deref().unwrap().contains("corrupt_rate"));
        assert_eq!(crc.details.len(), 3, "{crc:?}");
    }

    #[test]
    fn a_broken_config_file_fails_and_the_rest_still_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pmon.toml");
        std::fs::write(&path, "[acquisition]\npoll_intervall_ms = 5\n").unwrap();
        let common = Common {
            config: Some(path),
            data_dir: Some(dir.path().join("data")),
            ..Common::default()
        };
        let args = DoctorArgs {
            buses: Vec::new(),
            samples: 1,
            only: vec![Area::DataDir],
            timeout: 1,
            quiet: false,
            json: false,
        };
        let report = collect(&Inputs::from_command_line(&common, &args).unwrap());
        let config = report.find("configuration").unwrap();
        assert_eq!(config.level, Level::Fail);
        assert!(
            config.summary.contains("poll_intervall_ms"),
            "{}",
            config.summary
        );
        assert_eq!(level(&report, "data directory"), Level::Ok);
    }

    #[test]
    fn a_closed_broker_port_fails_with_how_to_start_one() {
        let machine = Machine::new();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut inputs = machine.inputs(Buses::Hardware(Vec::new()), &[Area::Broker]);
        inputs.mqtt_url = format!("mqtt://127.0.0.1:{port}");
        let report = collect(&inputs);
        let broker = report.find("MQTT broker").unwrap();
        assert_eq!(broker.level, Level::Fail);
        assert!(broker.summary.contains("refused"), "{}", broker.summary);
        assert!(broker.fix.as_deref().unwrap().contains("pmon-broker"));
    }

    #[test]
    fn the_report_renders_one_line_per_check_with_indented_fixes() {
        let report = Report {
            checks: vec![
                Check::new("a".into(), Level::Ok, "fine".into()),
                Check::new("b".into(), Level::Warn, "meh".into())
                    .with_details(vec!["detail".into()])
                    .with_fix("do this ".repeat(30)),
                Check::new("c".into(), Level::Fail, "broken".into()).with_fix("repair".into()),
                Check::new("d".into(), Level::Skip, "n/a".into()),
            ],
        };
        let out = text(&report);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "OK    a: fine");
        assert_eq!(lines[1], "WARN  b: meh");
        assert_eq!(lines[2], "      - detail");
        assert!(lines[3].starts_with("      fix: do this do this"));
        assert!(lines[4].starts_with("           do this"), "{out}");
        assert!(lines.iter().all(|l| l.chars().count() <= WIDTH), "{out}");
        assert!(
            out.contains("FAIL  c: broken\n      fix: repair\n"),
            "{out}"
        );
        assert!(out.contains("SKIP  d: n/a"));
        assert!(
            out.contains("summary: 1 check failed, 1 warning, 1 OK, 1 skipped"),
            "{out}"
        );

        let mut quiet = Vec::new();
        render(&report, true, &mut quiet).unwrap();
        let quiet = String::from_utf8(quiet).unwrap();
        assert!(
            !quiet.contains("OK    a") && !quiet.contains("summary"),
            "{quiet}"
        );
        assert!(quiet.contains("WARN  b") && quiet.contains("FAIL  c"));

        let only_warnings = Report {
            checks: vec![Check::new("b".into(), Level::Warn, "meh".into())],
        };
        assert!(only_warnings.passed());
        assert!(text(&only_warnings).contains("pmon can run"));
    }
}
