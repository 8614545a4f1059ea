//! How a metered call ended: one type for every ledger row, stored as a
//! stable code (`ledger.code`) plus free detail (`ledger.outcome`). The
//! console shows the code; the detail says more where there is more to say.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallOutcome {
    /// Served; charged at the usage the upstream reported.
    Ok,
    /// Served, but the upstream reported no usage: charged at an estimate.
    OkWithoutUsage,
    /// The caller left mid-stream: charged for what was produced.
    ClientDisconnected,
    /// The caller left before a non-streamed reply: charged the reservation.
    Abandoned,
    /// The upstream failed before producing anything: nothing charged.
    UpstreamError,
    /// The upstream failed mid-stream: charged for what was produced.
    UpstreamErrorMidStream,
    /// The upstream ran out of time: nothing charged.
    UpstreamTimeout,
    /// Refused before anything went upstream; the detail is the API error code.
    Refused,
    /// A lease whose holder died, charged in full.
    OrphanedLease,
}

impl CallOutcome {
    pub const ALL: [CallOutcome; 9] = [
        CallOutcome::Ok,
        CallOutcome::OkWithoutUsage,
        CallOutcome::ClientDisconnected,
        CallOutcome::Abandoned,
        CallOutcome::UpstreamError,
        CallOutcome::UpstreamErrorMidStream,
        CallOutcome::UpstreamTimeout,
        CallOutcome::Refused,
        CallOutcome::OrphanedLease,
    ];

    pub fn code(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::OkWithoutUsage => "ok_without_usage",
            CallOutcome::ClientDisconnected => "client_disconnected",
            CallOutcome::Abandoned => "abandoned",
            CallOutcome::UpstreamError => "upstream_error",
            CallOutcome::UpstreamErrorMidStream => "upstream_error_mid_stream",
            CallOutcome::UpstreamTimeout => "upstream_timeout",
            CallOutcome::Refused => "refused",
            CallOutcome::OrphanedLease => "orphaned_lease",
        }
    }

    pub fn parse(code: &str) -> Option<CallOutcome> {
        CallOutcome::ALL.into_iter().find(|o| o.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_parse_back() {
        for o in CallOutcome::ALL {
            assert_eq!(CallOutcome::parse(o.code()), Some(o));
        }
        let codes: std::collections::BTreeSet<_> =
            CallOutcome::ALL.iter().map(|o| o.code()).collect();
        assert_eq!(codes.len(), CallOutcome::ALL.len());
    }
}
