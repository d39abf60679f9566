//! Whatever the master sends and however broken the configuration, nothing panics.

use std::time::Duration;

use embedded_hal::i2c::{I2c, Operation};
use pmon_sim::{BusConfig, ClockMode, SimConfig, Simulator};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_transactions_never_panic(
        ops in proptest::collection::vec(
            (0x00u8..0x80, proptest::collection::vec(any::<u8>(), 0..40), 0usize..64, 0u64..300_000),
            1..40,
        ),
    ) {
        let mut config = SimConfig::demo(3, 5);
        config.buses = vec![BusConfig { corrupt_rate: 0.05, nack_rate: 0.05, ..BusConfig::new(0) }];
        let (mut buses, control) = Simulator::new(&config, ClockMode::Fast).expect("valid").into_parts();
        let (_, bus) = &mut buses[0];
        for (address, write, read_len, advance_us) in ops {
            control.advance(Duration::from_micros(advance_us));
            let mut read = vec![0u8; read_len];
            let mut operations = [Operation::Write(&write), Operation::Read(&mut read)];
            let _ = bus.transaction(address, &mut operations);
        }
    }

    #[test]
    fn arbitrary_text_is_rejected_without_panic(text in "\\PC{0,200}") {
        let _ = SimConfig::from_toml_str(&text);
    }

    #[test]
    fn arbitrary_slave_values_are_validated_without_panic(
        address in any::<u8>(),
        voltage in any::<f32>(),
        frequency in any::<f32>(),
        current in any::<f32>(),
        phase in any::<f32>(),
        order in any::<u8>(),
        amplitude in any::<f32>(),
    ) {
        let text = format!(
            "[[slave]]\naddress = {address}\nvoltage = {voltage:?}\nfrequency = {frequency:?}\ncurrent = {current:?}\nphase = {phase:?}\nharmonics = [[{order}, {amplitude:?}]]\n"
        );
        if let Ok(config) = SimConfig::from_toml_str(&text) {
            let built = Simulator::new(&config, ClockMode::Fast);
            prop_assert!(built.is_ok());
        }
    }
}
