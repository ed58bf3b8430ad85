//! A memory budget for request bodies in flight, so that what ingest holds
//! at once is bounded by bytes, not by the number of connections.
//!
//! Each request reserves its share before its body is read and gives it
//! back when it is answered: its `Content-Length` when the body is sent
//! plain, or the route's body cap when it is compressed or chunked (its
//! size after inflation is unknown until read). A request that does not fit
//! waits, in arrival order, under the route's request timeout (then 503 with
//! `Retry-After`); a reservation larger than the whole budget is cut to it,
//! so that one request of any allowed size always gets through alone.
//!
//! The reservation covers the body; what a body costs beyond its bytes
//! (the copy made when chunks are joined, parsing) is part of the
//! worst-case arithmetic in `docs/configuration.md`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is kept in units of this many bytes (a semaphore counts in
/// `u32`, and a KiB is fine enough).
const UNIT_BYTES: usize = 1024;

/// The shared budget; clones share it.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    total_units: u32,
    /// `bridge_ingest_body_bytes_reserved`.
    reserved_bytes: Gauge,
}

/// A reservation, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    bytes: i64,
    reserved_bytes: Gauge,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.reserved_bytes.dec_by(self.bytes);
    }
}

impl BodyBudget {
    /// A budget of `max_bytes` (at least one unit), reported in `reserved_bytes`.
    pub fn new(max_bytes: usize, reserved_bytes: Gauge) -> BodyBudget {
        let total_units = u32::try_from(max_bytes.div_ceil(UNIT_BYTES))
            .unwrap_or(u32::MAX)
            .clamp(1, Semaphore::MAX_PERMITS as u32);
        BodyBudget {
            units: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
            reserved_bytes,
        }
    }

    /// The bytes a request with these headers reserves, for a route whose
    /// body cap is `max_body_bytes`.
    pub fn reservation_bytes(headers: &HeaderMap, max_body_bytes: usize) -> usize {
        let is_plain = headers
            .get(header::CONTENT_ENCODING)
            .is_none_or(|encoding| encoding.as_bytes().eq_ignore_ascii_case(b"identity"));
        let content_length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok());
        match content_length {
            Some(length) if is_plain => length.min(max_body_bytes),
            _ => max_body_bytes,
        }
    }

    /// Waits until `bytes` fit, and holds them until the reservation drops.
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        let units = u32::try_from(bytes.div_ceil(UNIT_BYTES))
            .unwrap_or(u32::MAX)
            .min(self.total_units);
        let permit = Arc::clone(&self.units)
            .acquire_many_owned(units)
            .await
            .expect("the budget's semaphore is never closed");
        let bytes = i64::from(units) * UNIT_BYTES as i64;
        self.reserved_bytes.inc_by(bytes);
        Reservation {
            _permit: permit,
            bytes,
            reserved_bytes: self.reserved_bytes.clone(),
        }
    }

    /// Bytes reserved now.
    pub fn reserved_bytes(&self) -> i64 {
        self.reserved_bytes.get()
    }
}

/// What [`hold_while_answering`] needs: the budget and the route's body cap.
#[derive(Debug, Clone)]
pub struct RouteBudget {
    /// The shared budget.
    pub budget: BodyBudget,
    /// The route's largest body, after inflation.
    pub max_body_bytes: usize,
}

/// Middleware: reserves the request's share of the budget before the body
/// is read, and holds it until the answer is ready.
pub async fn hold_while_answering(
    State(route): State<RouteBudget>,
    request: Request,
    next: Next,
) -> Response {
    let bytes = BodyBudget::reservation_bytes(request.headers(), route.max_body_bytes);
    let _reservation = route.budget.reserve(bytes).await;
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::time::Duration;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn a_plain_body_reserves_its_length_and_others_the_cap() {
        let cap = 16 << 20;
        let plain = headers(&[(header::CONTENT_LENGTH, "5000")]);
        assert_eq!(BodyBudget::reservation_bytes(&plain, cap), 5000);
        let identity = headers(&[
            (header::CONTENT_LENGTH, "5000"),
            (header::CONTENT_ENCODING, "Identity"),
        ]);
        assert_eq!(BodyBudget::reservation_bytes(&identity, cap), 5000);
        let gzip = headers(&[
            (header::CONTENT_LENGTH, "5000"),
            (header::CONTENT_ENCODING, "gzip"),
        ]);
        assert_eq!(BodyBudget::reservation_bytes(&gzip, cap), cap);
        assert_eq!(BodyBudget::reservation_bytes(&HeaderMap::new(), cap), cap);
        let huge = headers(&[(header::CONTENT_LENGTH, "99999999999")]);
        assert_eq!(BodyBudget::reservation_bytes(&huge, cap), cap);
        let garbage = headers(&[(header::CONTENT_LENGTH, "12x")]);
        assert_eq!(BodyBudget::reservation_bytes(&garbage, cap), cap);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_does_not_fit_waits_until_one_is_answered() {
        let budget = BodyBudget::new(10 * UNIT_BYTES, Gauge::default());
        let first = budget.reserve(6 * UNIT_BYTES).await;
        // Rounded up to whole units.
        let second = budget.reserve(3 * UNIT_BYTES + 1).await;
        assert_eq!(budget.reserved_bytes(), 10 * UNIT_BYTES as i64);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(UNIT_BYTES).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            !waiting.is_finished(),
            "a full budget must make requests wait"
        );
        drop(second);
        let third = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("room was made")
            .unwrap();
        assert_eq!(budget.reserved_bytes(), 7 * UNIT_BYTES as i64);
        drop((first, third));
        assert_eq!(budget.reserved_bytes(), 0);
    }

    #[tokio::test]
    async fn a_request_larger_than_the_budget_gets_all_of_it() {
        let budget = BodyBudget::new(4 * UNIT_BYTES, Gauge::default());
        let whole = budget.reserve(100 * UNIT_BYTES).await;
        assert_eq!(budget.reserved_bytes(), 4 * UNIT_BYTES as i64);
        drop(whole);
        assert_eq!(budget.reserved_bytes(), 0);
    }
}
