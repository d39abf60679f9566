//! What the machine says about its I2C setup: device files, kernel adapters, the Raspberry
//! Pi's model and `config.txt`, groups. Every path is read below a root directory, `/` in
//! use and a temporary tree in tests.

use std::path::{Path, PathBuf};

/// The file system pmon doctor inspects.
#[derive(Debug, Clone)]
pub struct System {
    root: PathBuf,
}

impl Default for System {
    fn default() -> System {
        System::at("/")
    }
}

/// What the kernel reports about one I2C adapter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Adapter {
    /// `/sys/class/i2c-adapter/i2c-N/name`, e.g. `bcm2835 (i2c@7e804000)`.
    pub name: Option<String>,
    /// The device tree's `clock-frequency`, Hz (a big-endian u32 in sysfs).
    pub clock_hz: Option<u32>,
}

/// The controller behind an adapter, as far as it matters for ATmega slaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    /// The BCM2835-family I2C controller (every Pi up to the 4, the Zeros, CM1–CM4), which
    /// mishandles clock stretching.
    Bcm2835,
    /// A bit-banged `i2c-gpio` bus: honours clock stretching.
    Gpio,
    /// The Pi 5's RP1 (Synopsys DesignWare) controller: not known to share the defect.
    DesignWare,
    /// Anything else.
    Other,
}

impl Adapter {
    /// Which controller the adapter's name points to.
    pub fn controller(&self) -> Controller {
        let name = self.name.as_deref().unwrap_or("").to_ascii_lowercase();
        if name.contains("bcm2835") || name.contains("bcm2708") || name.contains("bcm2711") {
            Controller::Bcm2835
        } else if name.contains("gpio") {
            Controller::Gpio
        } else if name.contains("designware") || name.contains("synopsys") || name.contains("rp1") {
            Controller::DesignWare
        } else {
            Controller::Other
        }
    }
}

/// The I2C lines of a Raspberry Pi's `config.txt`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootConfig {
    /// Where it was read.
    pub path: PathBuf,
    /// `dtparam=i2c_arm=on` (or `i2c=on`): Some(true); `=off`: Some(false); absent: None.
    pub i2c_arm: Option<bool>,
    /// `dtparam=i2c_arm_baudrate=N` (or `i2c_baudrate`).
    pub baudrate: Option<u32>,
    /// Every `dtoverlay=` line that names an I2C overlay (`i2c3`…`i2c6`, `i2c-gpio`, …).
    pub overlays: Vec<String>,
}

/// Parses the I2C-related lines of `config.txt`. Comments and section headers (`[pi4]`) are
/// ignored: a setting counts wherever it stands.
pub fn parse_boot_config(path: &Path, text: &str) -> BootConfig {
    let mut config = BootConfig {
        path: path.to_path_buf(),
        ..BootConfig::default()
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(params) = line.strip_prefix("dtparam=") {
            for param in params.split(',') {
                let (key, value) = param.split_once('=').unwrap_or((param, "on"));
                match key.trim() {
                    "i2c_arm" | "i2c" | "i2c1" => {
                        config.i2c_arm = Some(matches!(value.trim(), "on" | "true" | "yes" | "1"))
                    }
                    "i2c_arm_baudrate" | "i2c_baudrate" | "i2c1_baudrate" => {
                        config.baudrate = value.trim().parse().ok()
                    }
                    _ => {}
                }
            }
        } else if let Some(overlay) = line.strip_prefix("dtoverlay=") {
            if overlay.trim_start().starts_with("i2c") {
                config.overlays.push(overlay.trim().to_string());
            }
        }
    }
    config
}

/// The number N of a device `/dev/i2c-N`.
pub fn bus_number(device: &Path) -> Option<u32> {
    device
        .file_name()?
        .to_str()?
        .strip_prefix("i2c-")?
        .parse()
        .ok()
}

impl System {
    /// The machine as seen below `root`.
    pub fn at(root: impl Into<PathBuf>) -> System {
        System { root: root.into() }
    }

    /// An absolute path of the machine, below the root.
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    /// `/dev/i2c-*`, ordered by bus number.
    pub fn i2c_devices(&self) -> Vec<PathBuf> {
        let mut devices: Vec<PathBuf> = std::fs::read_dir(self.path("/dev"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| bus_number(path).is_some())
                    .collect()
            })
            .unwrap_or_default();
        devices.sort_by_key(|path| bus_number(path));
        devices
    }

    /// Adapters the kernel has (`/sys/class/i2c-adapter`), whether or not i2c-dev made
    /// device files for them.
    pub fn adapters(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("/sys/class/i2c-adapter"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// What sysfs says about adapter `i2c-N`.
    pub fn adapter(&self, number: u32) -> Adapter {
        let dir = self.path(&format!("/sys/class/i2c-adapter/i2c-{number}"));
        let name = std::fs::read_to_string(dir.join("name"))
            .ok()
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty());
        let clock_hz = std::fs::read(dir.join("of_node/clock-frequency"))
            .ok()
            .and_then(|bytes| <[u8; 4]>::try_from(bytes.as_slice()).ok())
            .map(u32::from_be_bytes);
        Adapter { name, clock_hz }
    }

    /// The board model from the device tree, e.g. "Raspberry Pi 4 Model B Rev 1.4".
    pub fn model(&self) -> Option<String> {
        [
            "/proc/device-tree/model",
            "/sys/firmware/devicetree/base/model",
        ]
        .iter()
        .find_map(|path| std::fs::read(self.path(path)).ok())
        .map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .trim_end_matches('\0')
                .trim()
                .to_string()
        })
        .filter(|model| !model.is_empty())
    }

    /// Whether this is a Raspberry Pi.
    pub fn is_raspberry_pi(&self) -> bool {
        self.model()
            .is_some_and(|model| model.contains("Raspberry Pi"))
    }

    /// The Pi's `config.txt`: `/boot/firmware/config.txt` (Bookworm on) or `/boot/config.txt`.
    pub fn boot_config(&self) -> Option<BootConfig> {
        ["/boot/firmware/config.txt", "/boot/config.txt"]
            .iter()
            .find_map(|path| {
                let text = std::fs::read_to_string(self.path(path)).ok()?;
                Some(parse_boot_config(Path::new(path), &text))
            })
    }

    /// The name of group `gid` from `/etc/group`.
    pub fn group_name(&self, gid: u32) -> Option<String> {
        let text = std::fs::read_to_string(self.path("/etc/group")).ok()?;
        text.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let _password = fields.next()?;
            (fields.next()?.parse::<u32>().ok()? == gid).then(|| name.to_string())
        })
    }

    /// Members of a group by name, from `/etc/group` (secondary members only).
    pub fn group_members(&self, group: &str) -> Vec<String> {
        let Ok(text) = std::fs::read_to_string(self.path("/etc/group")) else {
            return Vec::new();
        };
        text.lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.len() == 4 && fields[0] == group).then(|| {
                    fields[3]
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// The groups this process has now (`/proc/self/status`), primary and supplementary.
    pub fn process_groups(&self) -> Vec<u32> {
        let Ok(text) = std::fs::read_to_string(self.path("/proc/self/status")) else {
            return Vec::new();
        };
        let mut groups: Vec<u32> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("Groups:") {
                groups.extend(
                    rest.split_whitespace()
                        .filter_map(|g| g.parse::<u32>().ok()),
                );
            } else if let Some(rest) = line.strip_prefix("Gid:") {
                groups.extend(
                    rest.split_whitespace()
                        .next()
                        .and_then(|g| g.parse::<u32>().ok()),
                );
            }
        }
        groups.sort_unstable();
        groups.dedup();
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_txt_lines_are_understood() {
        let text = "\
# comment dtparam=i2c_arm=off
[all]
dtparam=audio=on
dtparam=i2c_arm=on,i2c_arm_baudrate=50000   # slower for ATmega slaves
dtoverlay=vc4-kms-v3d
dtoverlay=i2c3,baudrate=100000
dtoverlay=i2c-gpio,bus=7,i2c_gpio_sda=17,i2c_gpio_scl=27
";
        let config = parse_boot_config(Path::new("/boot/firmware/config.txt"), text);
        assert_eq!(config.i2c_arm, Some(true));
        assert_eq!(config.baudrate, Some(50_000));
        assert_eq!(
            config.overlays,
            [
                "i2c3,baudrate=100000",
                "i2c-gpio,bus=7,i2c_gpio_sda=17,i2c_gpio_scl=27"
            ]
        );
        let off = parse_boot_config(Path::new("c"), "dtparam=i2c_arm=off\n");
        assert_eq!(off.i2c_arm, Some(false));
        assert_eq!(parse_boot_config(Path::new("c"), "").i2c_arm, None);
        assert_eq!(
            parse_boot_config(Path::new("c"), "dtparam=i2c_baudrate=100000").baudrate,
            Some(100_000)
        );
    }

    #[test]
    fn controllers_are_told_apart_by_name() {
        let adapter = |name: &str| Adapter {
            name: Some(name.into()),
            clock_hz: None,
        };
        assert_eq!(
            adapter("bcm2835 (i2c@7e804000)").controller(),
            Controller::Bcm2835
        );
        assert_eq!(adapter("i2c-gpio-rtc@0").controller(), Controller::Gpio);
        assert_eq!(
            adapter("Synopsys DesignWare I2C adapter").controller(),
            Controller::DesignWare
        );
        assert_eq!(
            adapter("SMBus I801 adapter").controller(),
            Controller::Other
        );
        assert_eq!(Adapter::default().controller(), Controller::Other);
    }

    #[test]
    fn a_fake_machine_is_read_below_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |path: &str, bytes: &[u8]| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        };
        write("dev/i2c-10", b"");
        write("dev/i2c-1", b"");
        write("dev/null", b"");
        write(
            "sys/class/i2c-adapter/i2c-1/name",
            b"bcm2835 (i2c@7e804000)\n",
        );
        write(
            "sys/class/i2c-adapter/i2c-1/of_node/clock-frequency",
            &400_000u32.to_be_bytes(),
        );
        write(
            "proc/device-tree/model",
            b"Raspberry Pi 4 Model B Rev 1.4\0",
        );
        write("boot/firmware/config.txt", b"dtparam=i2c_arm=on\n");
        write("etc/group", b"root:x:0:\ni2c:x:998:pi,pmon\n");
        write(
            "proc/self/status",
            b"Name:\tpmon\nGid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 998\n",
        );
        let system = System::at(root);
        assert_eq!(
            system.i2c_devices(),
            [root.join("dev/i2c-1"), root.join("dev/i2c-10")]
        );
        assert_eq!(system.adapters(), ["i2c-1"]);
        let adapter = system.adapter(1);
        assert_eq!(adapter.clock_hz, Some(400_000));
        assert_eq!(adapter.controller(), Controller::Bcm2835);
        assert_eq!(system.adapter(3), Adapter::default());
        assert!(system.is_raspberry_pi());
        assert_eq!(system.boot_config().unwrap().i2c_arm, Some(true));
        assert_eq!(system.group_name(998).as_deref(), Some("i2c"));
        assert_eq!(system.group_members("i2c"), ["pi", "pmon"]);
        assert_eq!(system.process_groups(), [4, 24, 998, 1000]);
    }
}
