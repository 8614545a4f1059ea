//! Why a single sign-on was refused: stable codes and messages.

use std::fmt;

/// Why a single sign-on was refused: a stable code (in the address of the
/// page that shows it, and in the log) and a message for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotConfigured,
    TooManyPending,
    StateMissing,
    StateUnknown,
    StateExpired,
    BrowserMismatch,
    ConfigChanged,
    ProviderError,
    ProviderUnavailable,
    TokenInvalid,
    TokenExpired,
    IssuerMismatch,
    AudienceMismatch,
    NonceMismatch,
    UnknownUser,
    UserInactive,
    NoUsername,
    LocalDisabled,
    Internal,
}

impl Refusal {
    pub const ALL: [Refusal; 19] = [
        Refusal::NotConfigured,
        Refusal::TooManyPending,
        Refusal::StateMissing,
        Refusal::StateUnknown,
        Refusal::StateExpired,
        Refusal::BrowserMismatch,
        Refusal::ConfigChanged,
        Refusal::ProviderError,
        Refusal::ProviderUnavailable,
        Refusal::TokenInvalid,
        Refusal::TokenExpired,
        Refusal::IssuerMismatch,
        Refusal::AudienceMismatch,
        Refusal::NonceMismatch,
        Refusal::UnknownUser,
        Refusal::UserInactive,
        Refusal::NoUsername,
        Refusal::LocalDisabled,
        Refusal::Internal,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Refusal::NotConfigured => "sso_not_configured",
            Refusal::TooManyPending => "too_many_pending",
            Refusal::StateMissing => "state_missing",
            Refusal::StateUnknown => "state_invalid",
            Refusal::StateExpired => "state_expired",
            Refusal::BrowserMismatch => "browser_mismatch",
            Refusal::ConfigChanged => "config_changed",
            Refusal::ProviderError => "provider_error",
            Refusal::ProviderUnavailable => "provider_unavailable",
            Refusal::TokenInvalid => "token_invalid",
            Refusal::TokenExpired => "token_expired",
            Refusal::IssuerMismatch => "issuer_mismatch",
            Refusal::AudienceMismatch => "audience_mismatch",
            Refusal::NonceMismatch => "nonce_mismatch",
            Refusal::UnknownUser => "unknown_user",
            Refusal::UserInactive => "user_inactive",
            Refusal::NoUsername => "no_username",
            Refusal::LocalDisabled => "local_disabled",
            Refusal::Internal => "internal",
        }
    }

    pub fn from_code(code: &str) -> Option<Refusal> {
        Refusal::ALL.into_iter().find(|r| r.code() == code)
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::NotConfigured => "Single sign-on is not configured on this server.",
            Refusal::TooManyPending => "Too many sign-ins are in progress; try again in a few minutes.",
            Refusal::StateMissing => "The sign-in answer carried no state; start again from the sign-in page.",
            Refusal::StateUnknown => "The sign-in answer does not match a sign-in this server started (it may have been used already or forged); start again from the sign-in page.",
            Refusal::StateExpired => "The sign-in took more than 10 minutes; start again from the sign-in page.",
            Refusal::BrowserMismatch => "The sign-in was started in another browser or tab; start again from the sign-in page.",
            Refusal::ConfigChanged => "The single sign-on settings changed during the sign-in; start again.",
            Refusal::ProviderError => "The identity provider did not sign you in.",
            Refusal::ProviderUnavailable => "The identity provider could not be reached or answered wrongly; try again later.",
            Refusal::TokenInvalid => "The identity provider's answer failed its checks (signature or claims); no session was created.",
            Refusal::TokenExpired => "The identity provider's ID token has expired (check the clocks); no session was created.",
            Refusal::IssuerMismatch => "The ID token comes from another issuer than the one configured.",
            Refusal::AudienceMismatch => "The ID token was not issued for this server.",
            Refusal::NonceMismatch => "The ID token does not belong to this sign-in.",
            Refusal::UnknownUser => "You have no account here, and accounts are not created on first sign-in; ask an admin.",
            Refusal::UserInactive => "Your account is deactivated; ask an admin.",
            Refusal::NoUsername => "The identity provider gave no usable name for a new account.",
            Refusal::LocalDisabled => "Password sign-in is turned off; use single sign-on.",
            Refusal::Internal => "Something went wrong on the server; the details are in its log.",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Where a refused sign-in lands: the sign-in page, showing the reason.
pub fn refusal_location(r: Refusal) -> String {
    format!("/login?sso_error={}", r.code())
}
