//! The advice pmon doctor gives, in one place so that every check says the same thing.

/// How to enable I2C, on a Pi and elsewhere.
pub const ENABLE_I2C: &str = "On a Raspberry Pi: `sudo raspi-config nonint do_i2c 0` (or raspi-config → \
Interface Options → I2C), or add `dtparam=i2c_arm=on` to /boot/firmware/config.txt (/boot/config.txt \
before Raspberry Pi OS Bookworm) and reboot. Load the device driver with `sudo modprobe i2c-dev` and keep \
it loaded with `echo i2c-dev | sudo tee /etc/modules-load.d/i2c-dev.conf`. In a container, pass the \
device in (docker compose: `devices: [\"/dev/i2c-1:/dev/i2c-1\"]`). No I2C here? Try pmon with simulated \
boards: `pmon up --sim 8`, and `pmon doctor --sim 8`.";

/// i2c-dev is not loaded although the kernel has adapters.
pub const LOAD_I2C_DEV: &str =
    "The kernel has I2C adapters but no /dev/i2c-* files: load the i2c-dev \
module with `sudo modprobe i2c-dev`, and keep it loaded with `echo i2c-dev | sudo tee \
/etc/modules-load.d/i2c-dev.conf`.";

/// Pi 4 extra buses.
pub const EXTRA_BUSES: &str = "On a Pi 4 (and CM4, Pi 400) the extra controllers i2c3–i2c6 are enabled \
by overlays in /boot/firmware/config.txt: `dtoverlay=i2c3,baudrate=100000` (GPIO 4/5), `dtoverlay=i2c4` \
(GPIO 8/9), `dtoverlay=i2c5` (GPIO 12/13), `dtoverlay=i2c6` (GPIO 22/23); reboot afterwards. Then \
`ls /dev/i2c-*` lists them.";

/// How to get read/write access to the device.
pub const ACCESS: &str = "Add the user that runs pmon to the group that owns the device and log in \
again: `sudo usermod -aG i2c $USER`, then log out and back in (or run `newgrp i2c`). Raspberry Pi OS \
creates the i2c group and its udev rule; elsewhere create them: `sudo groupadd --system i2c` and \
`echo 'SUBSYSTEM==\"i2c-dev\", GROUP=\"i2c\", MODE=\"0660\"' | sudo tee /etc/udev/rules.d/99-i2c.rules`, \
then `sudo udevadm trigger`. pmon's systemd units add the group with SupplementaryGroups=i2c, and \
docker compose with group_add (the host's i2c group id).";

/// The clock-stretching problem of the Pi and what to do about it.
pub const CLOCK_STRETCHING: &str = "The Raspberry Pi's I2C controller (BCM2835 family: every Pi up to the \
4, the Zeros, CM1–CM4) mishandles clock stretching (raspberrypi/linux issues #254 and #4884), and the \
ATmega328P's TWI stretches SCL after every byte; the faster the clock, the more often a stretch ends at \
the wrong moment, which corrupts bytes and can hang the bus. Mitigations, best used together: (1) lower \
the clock: `dtparam=i2c_arm_baudrate=100000` (or 50000) in /boot/firmware/config.txt, \
`dtoverlay=i2c3,baudrate=100000` for the extra buses, then reboot; (2) where that is not enough, a \
bit-banged bus that honours stretching: `dtoverlay=i2c-gpio,bus=7,i2c_gpio_sda=17,i2c_gpio_scl=27,\
i2c_gpio_delay_us=2` (any free GPIO pair, with pull-ups); (3) pmon checks the CRC of every transfer and \
retries it, so corruption costs bus time, not data. Details: docs/protocol/i2c.md §7.2.";

/// Wiring advice for a noisy or empty bus.
pub const WIRING: &str = "Check the wiring: SDA to SDA, SCL to SCL, a common ground, short cables (a \
segment carries at most 400 pF), one set of pull-ups per segment to 3.3 V (the Pi has 1.8 kΩ on GPIO 2/3; \
never pull up to 5 V on a Pi), and that every slave is powered.";

/// Finding slaves.
pub const NO_SLAVES: &str =
    "No slave acknowledged any address in 0x08–0x77. Check power and wiring (SDA, \
SCL, ground, pull-ups), that the boards run pmon firmware, and that each has its own address. \
`sudo apt install i2c-tools; i2cdetect -y N` lists every address that acknowledges on /dev/i2c-N.";

/// Starting or finding the broker.
pub const BROKER_DOWN: &str =
    "Start the broker, or point pmon at the one you run: `pmon up` embeds a \
broker (doctor checks a running system, so start it first); as services: `sudo systemctl start \
pmon-broker` (or mosquitto), or `docker compose up -d broker`. Another broker: set `--mqtt-url \
mqtt://HOST:1883`, PMON_MQTT_URL, or `[mqtt] url` in the config file.";

/// Resolving the host.
pub const BROKER_HOST: &str = "Check the host name in --mqtt-url, PMON_MQTT_URL or `[mqtt] url`. Inside \
docker compose the broker is reached by its service name (mqtt://broker:1883); on the host itself, by \
mqtt://127.0.0.1:1883.";

/// A broker that does not answer.
pub const BROKER_TIMEOUT: &str = "Nothing answered: the host may be down, the address wrong, or a firewall \
may drop port 1883 (`sudo ufw allow 1883/tcp`, or the cloud provider's security group). An embedded \
broker that should serve other hosts must bind to 0.0.0.0 (`[broker] bind = \"0.0.0.0:1883\"`).";

/// Credentials.
pub const BROKER_CREDENTIALS: &str = "Set the broker's user name and password in the config file: \
`[mqtt] username = \"pmon\"` and `password = \"…\"` (mosquitto: `mosquitto_passwd -c \
/mosquitto/config/passwd pmon`, see mosquitto.conf). rumqttd, pmon's embedded broker, closes the \
connection without an answer when it refuses a client.";

/// Data directory problems.
pub const DATA_DIR: &str = "pmon keeps the acquisition's sequence and energy bases and the historian's \
database there. Choose a writable directory with `--data-dir DIR`, PMON_DATA_DIR or `data_dir` in the \
config file, or give the service user the directory: `sudo install -d -o pmon -g pmon /var/lib/pmon` \
(the systemd units use StateDirectory=pmon, the containers a named volume on /var/lib/pmon).";

/// A data directory in RAM.
pub const TMPFS: &str =
    "Files in a RAM file system are lost at every reboot, energy totals and history \
with them. Use a directory on the SD card or SSD, e.g. /var/lib/pmon.";
