//! Passwords: argon2id with OWASP's parameters (19 MiB, 2 passes, 1 lane),
//! stored as PHC strings.
//!
//! Hashing is deliberately slow, so request handlers use the `_async`
//! versions: they run on tokio's blocking pool, on at most half the cores
//! at a time, so a flood of sign-ins queues there instead of stalling the threads
//! that serve the JSON API.

use argon2::password_hash::{Output, PasswordHash, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

pub const MIN_PASSWORD_LEN: usize = 10;
/// Longer passwords are refused before they are hashed or checked.
pub const MAX_PASSWORD_LEN: usize = 1024;

fn argon2() -> Result<Argon2<'static>, String> {
    let params = Params::new(M_COST, T_COST, 1, Some(OUTPUT_LEN)).map_err(|e| e.to_string())?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

pub fn check_password_policy(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(format!(
            "a password needs at least {MIN_PASSWORD_LEN} characters"
        ));
    }
    check_password_length(password)
}

/// The only check a password to sign in with gets before it is verified.
pub fn check_password_length(password: &str) -> Result<(), String> {
    if password.len() > MAX_PASSWORD_LEN {
        return Err(format!(
            "a password is at most {MAX_PASSWORD_LEN} bytes long"
        ));
    }
    Ok(())
}

/// How many hashes may run at once.
fn hashing_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        // Half the cores at most: a flood of sign-ins must leave CPU for the
        // JSON API, not just threads.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::sync::Semaphore::new((cores / 2).max(1))
    })
}

/// Runs one argon2 computation on the blocking pool, waiting for a free slot.
async fn off_the_runtime<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let _slot = hashing_slots()
        .acquire()
        .await
        .map_err(|e| format!("password hashing is unavailable: {e}"))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("password hashing failed: {e}"))
}

pub async fn hash_password_async(password: String) -> Result<String, String> {
    off_the_runtime(move || hash_password(&password)).await?
}

pub async fn verify_password_async(password: String, phc: String) -> bool {
    off_the_runtime(move || verify_password(&password, &phc))
        .await
        .unwrap_or(false)
}

/// Memory cost in KiB (argon2 blocks are 1 KiB): OWASP's 19 MiB.
const M_COST: u32 = 19 * 1024;
const T_COST: u32 = 2;
const OUTPUT_LEN: usize = 32;

/// Runs `f` with an argon2 working area of [`M_COST`] blocks, reused from call
/// to call: allocating 19 MiB a hash left the allocator holding hundreds of
/// megabytes after a flood of sign-ins. At most one area per concurrent
/// hash is kept, and hashes are limited by `hashing_slots`.
fn with_memory<T>(f: impl FnOnce(&mut [argon2::Block]) -> T) -> T {
    static AREAS: std::sync::Mutex<Vec<Vec<argon2::Block>>> = std::sync::Mutex::new(Vec::new());
    let take = || AREAS.lock().unwrap_or_else(|p| p.into_inner()).pop();
    let mut area = take().unwrap_or_else(|| vec![argon2::Block::default(); M_COST as usize]);
    let out = f(&mut area);
    AREAS.lock().unwrap_or_else(|p| p.into_inner()).push(area);
    out
}

fn derive(password: &[u8], salt: &[u8]) -> Result<[u8; OUTPUT_LEN], String> {
    let mut out = [0u8; OUTPUT_LEN];
    with_memory(|area| {
        argon2()?
            .hash_password_into_with_memory(password, salt, &mut out, area)
            .map_err(|e| e.to_string())
    })?;
    Ok(out)
}

pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("the system random source failed: {e}"))?;
    let out = derive(password.as_bytes(), &salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    let hash = Output::new(&out).map_err(|e| e.to_string())?;
    Ok(format!(
        "$argon2id$v=19$m={M_COST},t={T_COST},p=1${}${hash}",
        salt.as_str()
    ))
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let ours = parsed.algorithm.as_str() == "argon2id"
        && parsed.version == Some(19)
        && parsed.params.get_decimal("m") == Some(M_COST)
        && parsed.params.get_decimal("t") == Some(T_COST)
        && parsed.params.get_decimal("p") == Some(1);
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    if !ours || expected.len() != OUTPUT_LEN {
        // Other parameters: the library's own path (it allocates).
        return argon2().is_ok_and(|a| a.verify_password(password.as_bytes(), &parsed).is_ok());
    }
    let mut buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut buf) else {
        return false;
    };
    derive(password.as_bytes(), salt)
        .ok()
        .and_then(|out| Output::new(&out).ok())
        .is_some_and(|got| got == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(verify_password("correct horse battery", &a));
        assert!(!verify_password("wrong", &a));
        assert!(!verify_password("x", "not a hash"));
        // A hash made by the library's own path verifies too.
        use argon2::password_hash::PasswordHasher;
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let lib = argon2()
            .unwrap()
            .hash_password(b"correct horse battery", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("correct horse battery", &lib), "{lib}");
        assert!(!verify_password("wrong", &lib));
        let other = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"correct horse battery", &salt)
        .unwrap()
        .to_string();
        assert!(
            verify_password("correct horse battery", &other),
            "other parameters"
        );
        assert!(check_password_policy("short").is_err());
        assert!(check_password_policy(&"x".repeat(MAX_PASSWORD_LEN + 1)).is_err());
        assert!(check_password_length(&"x".repeat(MAX_PASSWORD_LEN)).is_ok());
    }

    #[tokio::test]
    async fn hashing_waits_for_a_free_slot() {
        let slots = hashing_slots();
        let all = slots.available_permits() as u32;
        let held = slots.acquire_many(all).await.unwrap();
        let hash = dummy();
        let mut verify = Box::pin(verify_password_async("pw".into(), hash.clone()));
        assert!(
            futures_poll_once(verify.as_mut()).await.is_none(),
            "no check runs while every slot is taken"
        );
        drop(held);
        assert!(!verify.await);
        assert!(verify_password_async("correct horse battery".into(), hash).await);
    }

    fn dummy() -> String {
        hash_password("correct horse battery").unwrap()
    }

    /// Polls a future once: `Some` if it finished.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
