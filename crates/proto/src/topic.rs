//! Topic names. Every topic of a site starts with `pmon/<site>/`, so one broker can carry many
//! sites and a bridge to a central broker needs configuration, not code.

/// Builds the topics of one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    root: String,
}

/// What a per-circuit topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitTopic {
    /// Postcard [`crate::Frame`]s, QoS 1.
    Frame,
    /// JSON [`crate::State`], QoS 0.
    State,
    /// `online` / `offline`, retained.
    Availability,
    /// JSON [`crate::Health`], QoS 0.
    Health,
    /// JSON [`crate::health::CircuitInfo`], retained.
    Info,
}

impl CircuitTopic {
    fn leaf(self) -> &'static str {
        match self {
            CircuitTopic::Frame => "frame",
            CircuitTopic::State => "state",
            CircuitTopic::Availability => "availability",
            CircuitTopic::Health => "health",
            CircuitTopic::Info => "info",
        }
    }

    fn from_leaf(leaf: &str) -> Option<CircuitTopic> {
        Some(match leaf {
            "frame" => CircuitTopic::Frame,
            "state" => CircuitTopic::State,
            "availability" => CircuitTopic::Availability,
            "health" => CircuitTopic::Health,
            "info" => CircuitTopic::Info,
            _ => return None,
        })
    }
}

/// A site name is one MQTT topic level: no `/`, `+`, `#` or NUL, not empty, at most 64 bytes.
pub fn valid_level(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.contains(['/', '+', '#', '\0'])
        && !name.chars().any(char::is_control)
}

impl Topics {
    /// Topics of `site`; `None` when the name cannot be a topic level.
    pub fn new(site: &str) -> Option<Topics> {
        valid_level(site).then(|| Topics {
            root: format!("pmon/{site}"),
        })
    }

    /// `pmon/<site>`.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `pmon/<site>/status`: the acquisition's availability, retained, with a last will.
    pub fn status(&self) -> String {
        format!("{}/status", self.root)
    }

    /// `pmon/<site>/circuit/<id>/<leaf>`.
    pub fn circuit(&self, id: &str, which: CircuitTopic) -> String {
        format!("{}/circuit/{id}/{}", self.root, which.leaf())
    }

    /// `pmon/<site>/circuit/<id>/raw/<quantity>`: one plain number per message (see
    /// [`crate::discovery::QUANTITIES`] for the quantity ids).
    pub fn raw(&self, id: &str, quantity: &str) -> String {
        format!("{}/circuit/{id}/raw/{quantity}", self.root)
    }

    /// A filter for one kind of topic of every circuit: `pmon/<site>/circuit/+/<leaf>`.
    pub fn all_circuits(&self, which: CircuitTopic) -> String {
        format!("{}/circuit/+/{}", self.root, which.leaf())
    }

    /// Splits `pmon/<site>/circuit/<id>/<leaf>` into the circuit id and what it carries.
    pub fn parse_circuit<'a>(&self, topic: &'a str) -> Option<(&'a str, CircuitTopic)> {
        let rest = topic
            .strip_prefix(self.root.as_str())?
            .strip_prefix("/circuit/")?;
        let (id, leaf) = rest.split_once('/')?;
        if !valid_level(id) {
            return None;
        }
        Some((id, CircuitTopic::from_leaf(leaf)?))
    }
}

/// The stable id of the circuit a slave measures: its serial number in 8 lowercase hex digits.
/// It survives restarts and re-addressing, since the serial lives in the board.
pub fn circuit_id(serial: u32) -> String {
    format!("{serial:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_what_the_document_says() {
        let t = Topics::new("home").unwrap();
        assert_eq!(t.status(), "pmon/home/status");
        assert_eq!(
            t.circuit("00c0ffee", CircuitTopic::Frame),
            "pmon/home/circuit/00c0ffee/frame"
        );
        assert_eq!(
            t.all_circuits(CircuitTopic::State),
            "pmon/home/circuit/+/state"
        );
        assert_eq!(
            t.parse_circuit("pmon/home/circuit/00c0ffee/availability"),
            Some(("00c0ffee", CircuitTopic::Availability))
        );
        assert_eq!(t.parse_circuit("pmon/other/circuit/x/state"), None);
        assert_eq!(t.parse_circuit("pmon/home/circuit/x/bogus"), None);
        assert_eq!(
            t.raw("00c0ffee", "voltage"),
            "pmon/home/circuit/00c0ffee/raw/voltage"
        );
        assert_eq!(t.parse_circuit(&t.raw("00c0ffee", "voltage")), None);
        assert_eq!(circuit_id(0xC0FFEE), "00c0ffee");
    }

    #[test]
    fn site_names_must_be_one_level() {
        for bad in ["", "a/b", "a+", "#", "x\0", "tab\t"] {
            assert!(Topics::new(bad).is_none(), "{bad:?}");
        }
        assert!(Topics::new("site-1_ä").is_some());
    }
}
