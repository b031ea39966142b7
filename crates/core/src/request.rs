//! The ID of one API or CRI request: taken from the caller's `X-Request-Id` when it sends a usable one, made
//! here otherwise, and put in the span that every log line of the work done for that request is written in.

/// The header (HTTP) or metadata key (gRPC) a request's ID comes in and goes back in.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest ID taken from a caller; a longer one is replaced by one of ours.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// A new request ID in OpenStack's form, `req-` and a random UUID-shaped hex string.
pub fn new_request_id() -> String {
    let h = crate::new_id();
    format!(
        "req-{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The caller's ID when it is one we can log and send back as is: 1 to [`MAX_REQUEST_ID_LEN`] printable ASCII
/// characters without spaces (nothing that could split a log line or a header).
pub fn accept_request_id(value: &str) -> Option<&str> {
    let usable = !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value.bytes().all(|b| b.is_ascii_graphic());
    usable.then_some(value)
}

/// The request's ID: the caller's if usable ([`accept_request_id`]), else a new one.
pub fn request_id_from(incoming: Option<&str>) -> String {
    incoming
        .and_then(accept_request_id)
        .map(str::to_string)
        .unwrap_or_else(new_request_id)
}

/// `tokio::task::spawn_blocking` inside the caller's tracing span: what the blocking work logs carries the
/// fields of the request it is done for (its `request_id`).
pub fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_look_like_openstacks_and_differ() {
        let id = new_request_id();
        assert_eq!(id.len(), 40);
        assert!(id.starts_with("req-"));
        assert_eq!(id.matches('-').count(), 5);
        assert_ne!(id, new_request_id());
    }

    #[test]
    fn a_callers_id_is_kept_when_usable() {
        assert_eq!(request_id_from(Some("test-123")), "test-123");
        assert_eq!(accept_request_id("req-abc_1.2:3"), Some("req-abc_1.2:3"));
        let longest = "a".repeat(MAX_REQUEST_ID_LEN);
        assert_eq!(request_id_from(Some(&longest)), longest);
    }

    #[test]
    fn an_unusable_id_is_replaced() {
        for bad in [
            "",
            "two words",
            "line\nbreak",
            "tab\t",
            "caf\u{e9}",
            &"a".repeat(MAX_REQUEST_ID_LEN + 1),
        ] {
            assert_eq!(accept_request_id(bad), None, "{bad:?}");
            assert!(request_id_from(Some(bad)).starts_with("req-"), "{bad:?}");
        }
        assert!(request_id_from(None).starts_with("req-"));
    }

    #[tokio::test]
    async fn blocking_work_runs_in_the_callers_span() {
        use tracing::Instrument;
        // The only subscriber of this test binary: blocking threads see the global one only.
        tracing::subscriber::set_global_default(tracing_subscriber::registry()).unwrap();
        let span = tracing::info_span!("request", request_id = "test-123");
        let expected = span.id();
        assert!(expected.is_some());
        let seen = async {
            spawn_blocking(|| tracing::Span::current().id())
                .await
                .unwrap()
        }
        .instrument(span)
        .await;
        assert_eq!(seen, expected);
    }
}
