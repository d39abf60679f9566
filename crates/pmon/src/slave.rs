//! `pmon slave …`: maintenance of slave boards. `set-address` moves a board to another bus
//! address (protocol register 0x50), after showing who it is and asking for confirmation.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use pmon_bus::{capability, DriverError, ReaddressProblem, RetryPolicy};
use pmon_proto::topic::circuit_id;

use crate::buses::{self, parse_address, Buses, HardwareBus, OpenBus};
use crate::cli::Common;
use crate::doctor::slaves::describe;
use crate::settings;

/// `pmon slave …`.
#[derive(Debug, Subcommand)]
pub enum SlaveCommand {
    /// Move a slave board to another bus address (boards built alike share a default address).
    ///
    /// Shows the board's identity and asks before writing (on a terminal; otherwise --yes is
    /// required), refuses an address something already answers on, then verifies that the
    /// board answers at the new address with the same serial number (its circuit id) and no
    /// longer at the old one. Stop the acquisition meanwhile.
    SetAddress(SetAddressArgs),
}

/// `pmon slave set-address`.
#[derive(Debug, Clone, Args)]
pub struct SetAddressArgs {
    /// The bus: a configured bus id (i2c-1), a device (/dev/i2c-1), or with --sim a simulated
    /// bus (sim-0). May be left out when there is only one bus.
    #[arg(long, value_name = "ID|DEVICE")]
    pub bus: Option<String>,
    /// The slave's address now, e.g. 0x10.
    #[arg(long, value_name = "ADDR", value_parser = parse_address)]
    pub from: u8,
    /// The address to move it to, 0x08..=0x77, e.g. 0x11.
    #[arg(long, value_name = "ADDR", value_parser = parse_address)]
    pub to: u8,
    /// Do not ask for confirmation (needed when standard input is not a terminal).
    #[arg(long, short)]
    pub yes: bool,
}

/// Runs a `pmon slave` command on the real standard input and output.
pub fn run(common: &Common, command: &SlaveCommand) -> anyhow::Result<()> {
    match command {
        SlaveCommand::SetAddress(args) => {
            let stdin = std::io::stdin();
            let interactive = stdin.is_terminal();
            let stdout = std::io::stdout();
            set_address(
                common,
                args,
                &mut stdin.lock(),
                interactive,
                &mut stdout.lock(),
            )
        }
    }
}

/// Opens the bus `--bus` names (or the only one).
fn open_bus(common: &Common, wanted: Option<&str>) -> anyhow::Result<(OpenBus, bool)> {
    let resolved = settings::resolve(common)?;
    let policy = RetryPolicy {
        attempts: resolved.acquisition.retries,
        ..RetryPolicy::default()
    };
    match Buses::from_settings(common, &resolved) {
        Buses::Simulated { config, .. } => {
            let mut all = buses::open_simulated(&config, policy)?;
            let index = match wanted {
                Some(name) => all
                    .iter()
                    .position(|b| b.id == name || b.id.strip_prefix("sim-") == Some(name))
                    .ok_or_else(|| {
                        anyhow!("no simulated bus {name:?}; the simulator has {}", ids(&all))
                    })?,
                None if all.len() == 1 => 0,
                None => bail!("name the bus with --bus: the simulator has {}", ids(&all)),
            };
            Ok((all.swap_remove(index), true))
        }
        Buses::Hardware(configured) => {
            let bus = match wanted {
                Some(name) => match configured
                    .iter()
                    .find(|bus| bus.id == name || bus.path.as_os_str() == name)
                {
                    Some(bus) => bus.clone(),
                    None if name.contains('/') => {
                        HardwareBus::linux(buses::id_for_path(Path::new(name)), name)
                    }
                    None => bail!(
                        "no configured bus is called {name:?} ({}); name a device such as /dev/i2c-1 instead",
                        configured_list(&configured)
                    ),
                },
                None => match configured.as_slice() {
                    [bus] => bus.clone(),
                    [] => bail!(
                        "no I2C bus is configured: name the device with --bus /dev/i2c-1 \
                         (or add [[acquisition.bus]] to the config file)"
                    ),
                    _ => bail!(
                        "name the bus with --bus: {} are configured",
                        configured_list(&configured)
                    ),
                },
            };
            let opened = buses::open_configured(&bus, policy).with_context(|| {
                format!("cannot open bus {}; `pmon doctor` explains why", bus.id)
            })?;
            Ok((opened, false))
        }
    }
}

fn ids(buses: &[OpenBus]) -> String {
    buses
        .iter()
        .map(|b| b.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn configured_list(configured: &[HardwareBus]) -> String {
    if configured.is_empty() {
        return "none is configured".into();
    }
    configured
        .iter()
        .map(|bus| format!("{} = {}", bus.id, bus.path.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `pmon slave set-address` with its input and output given (tests drive it directly).
/// `interactive` says whether `input` is a terminal a person answers on.
pub fn set_address(
    common: &Common,
    args: &SetAddressArgs,
    input: &mut dyn BufRead,
    interactive: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (from, to) = (args.from, args.to);
    if from == to {
        bail!("--from and --to are both {from:#04x}: nothing to do");
    }
    let (mut bus, simulated) = open_bus(common, args.bus.as_deref())?;
    let master = bus.master.as_mut();
    let identity = master.identify(from).map_err(|error| match error {
        DriverError::Nack { .. } => anyhow!(
            "no slave answers at {from:#04x} on {}; `pmon doctor` lists the slaves it finds",
            bus.id
        ),
        other => anyhow!(other).context(format!("cannot read slave {from:#04x} on {}", bus.id)),
    })?;
    writeln!(out, "slave on {}: {}", bus.id, describe(from, &identity))?;
    let refuse = |problem| DriverError::Readdress { from, to, problem };
    if identity.capabilities & capability::ADDRESSABLE == 0 {
        bail!(refuse(ReaddressProblem::NotAddressable {
            serial: identity.serial
        }));
    }
    match master.probe(to) {
        Err(DriverError::Nack { .. }) => {}
        Ok(other) => bail!(refuse(ReaddressProblem::Occupied {
            serial: Some(other.serial)
        })),
        Err(DriverError::Decode { .. }) => {
            bail!(refuse(ReaddressProblem::Occupied { serial: None }))
        }
        Err(error) => return Err(anyhow!(error).context(format!("cannot check address {to:#04x}"))),
    }
    let circuit = circuit_id(identity.serial);
    if !args.yes {
        if !interactive {
            bail!(
                "not changing the address of slave {from:#04x} without confirmation: standard \
                 input is not a terminal. Run the command in a terminal, or add --yes"
            );
        }
        write!(
            out,
            "Move circuit {circuit} on {} from {from:#04x} to {to:#04x}? Stop `pmon acquire` \
             first. [y/N] ",
            bus.id
        )?;
        out.flush()?;
        let mut answer = String::new();
        input.read_line(&mut answer)?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            bail!("cancelled: nothing was written");
        }
    }
    let moved = master
        .set_address(from, to)
        .with_context(|| format!("on bus {}", bus.id))?;
    writeln!(
        out,
        "moved: circuit {} now answers at {to:#04x} on {} (verified: same serial {:08X} at \
         {to:#04x}, nothing at {from:#04x}); its circuit id is unchanged",
        circuit_id(moved.serial),
        bus.id,
        moved.serial
    )?;
    if simulated {
        writeln!(
            out,
            "note: this is the simulator; it forgets the change when this command exits"
        )?;
    } else {
        writeln!(
            out,
            "Label the board with its new address. A running acquisition finds it at its next \
             scan (acquisition.rescan_interval_s)."
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(n: usize) -> Common {
        Common {
            sim: Some(n),
            ..Common::default()
        }
    }

    fn args(from: u8, to: u8, yes: bool) -> SetAddressArgs {
        SetAddressArgs {
            bus: Some("sim-0".into()),
            from,
            to,
            yes,
        }
    }

    fn run_with(
        common: &Common,
        args: &SetAddressArgs,
        answer: &str,
        tty: bool,
    ) -> (anyhow::Result<()>, String) {
        let mut out = Vec::new();
        let result = set_address(common, args, &mut answer.as_bytes(), tty, &mut out);
        (result, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn moves_a_simulated_slave_after_a_yes_on_the_terminal() {
        let (result, out) = run_with(&sim(2), &args(0x10, 0x20, false), "y\n", true);
        result.unwrap();
        assert!(out.contains("[y/N]"), "{out}");
        assert!(
            out.contains("moved: circuit 504d0010 now answers at 0x20"),
            "{out}"
        );
    }

    #[test]
    fn anything_but_yes_cancels_and_writes_nothing() {
        let (result, out) = run_with(&sim(2), &args(0x10, 0x20, false), "\n", true);
        let error = result.unwrap_err().to_string();
        assert!(error.contains("cancelled"), "{error}");
        assert!(!out.contains("moved"), "{out}");
    }

    #[test]
    fn without_a_terminal_yes_is_required() {
        let (result, _) = run_with(&sim(2), &args(0x10, 0x20, false), "y\n", false);
        let error = result.unwrap_err().to_string();
        assert!(
            error.contains("not a terminal") && error.contains("--yes"),
            "{error}"
        );
    }

    #[test]
    fn refusals_say_why() {
        let error = |args: SetAddressArgs| {
            format!("{:#}", run_with(&sim(2), &args, "", false).0.unwrap_err())
        };
        let taken = error(args(0x10, 0x11, true));
        assert!(
            taken.contains("taken by pmon slave serial 504D0011"),
            "{taken}"
        );
        let absent = error(args(0x30, 0x31, true));
        assert!(
            absent.contains("no slave answers at 0x30 on sim-0"),
            "{absent}"
        );
        let same = error(args(0x10, 0x10, true));
        assert!(same.contains("nothing to do"), "{same}");
        let bad_bus = error(SetAddressArgs {
            bus: Some("sim-7".into()),
            ..args(0x10, 0x20, true)
        });
        assert!(bad_bus.contains("sim-0"), "{bad_bus}");
    }

    #[test]
    fn a_missing_device_is_explained() {
        let error = run_with(
            &Common::default(),
            &SetAddressArgs {
                bus: Some("/dev/i2c-does-not-exist".into()),
                ..args(0x10, 0x11, true)
            },
            "",
            false,
        )
        .0
        .unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains("/dev/i2c-does-not-exist"), "{text}");
        assert!(text.contains("pmon doctor"), "{text}");
    }
}
