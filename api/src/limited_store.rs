//! A store wrapper that bounds how many store calls the API runs at once, queueing the rest
//! in order. The embedded SQLite adapter keeps a pool of four read connections and opens
//! (and parses the schema of) a fresh one for every call beyond that; under load, waiting a
//! few microseconds for a pooled connection is far cheaper. Any adapter gains from a bound:
//! a slow store then slows requests down instead of piling up calls.

use async_trait::async_trait;
use orders_core::store::*;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Store calls in flight at once, by default: the SQLite adapter's pool of readers.
pub const DEFAULT_STORE_CONCURRENCY: usize = 4;

pub struct LimitedStore {
    inner: Arc<dyn OrderStore>,
    permits: Semaphore,
}

impl LimitedStore {
    pub fn new(inner: Arc<dyn OrderStore>, concurrency: usize) -> Self {
        LimitedStore {
            inner,
            permits: Semaphore::new(concurrency.max(1)),
        }
    }
}

/// Runs `$call` on the inner store while holding a permit.
macro_rules! limited {
    ($self:ident, $call:expr) => {{
        let _permit = $self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("store limiter closed".into()))?;
        $call.await
    }};
}

#[async_trait]
impl OrderStore for LimitedStore {
    async fn apply(&self, batch: Arc<StoreBatch>) -> Result<BatchOutcome, StoreError> {
        limited!(self, self.inner.apply(batch))
    }
    async fn totals(&self) -> Result<Totals, StoreError> {
        limited!(self, self.inner.totals())
    }
    async fn minute_windows(
        &self,
        from_us: i64,
        to_us: i64,
    ) -> Result<Vec<MinuteWindow>, StoreError> {
        limited!(self, self.inner.minute_windows(from_us, to_us))
    }
    async fn max_order_id(&self) -> Result<Option<u64>, StoreError> {
        limited!(self, self.inner.max_order_id())
    }
    async fn latest_orders(&self, query: &OrderQuery) -> Result<Vec<OrderDocument>, StoreError> {
        limited!(self, self.inner.latest_orders(query))
    }
    async fn order(&self, order_id: u64) -> Result<Option<OrderDocument>, StoreError> {
        limited!(self, self.inner.order(order_id))
    }
    async fn alert(&self, order_id: u64) -> Result<Option<StoredAlert>, StoreError> {
        limited!(self, self.inner.alert(order_id))
    }
    async fn payment(&self, order_id: u64) -> Result<Option<StoredPayment>, StoreError> {
        limited!(self, self.inner.payment(order_id))
    }
    async fn latest_alerts(&self, limit: usize) -> Result<Vec<StoredAlert>, StoreError> {
        limited!(self, self.inner.latest_alerts(limit))
    }
    async fn latest_payments(&self, limit: usize) -> Result<Vec<StoredPayment>, StoreError> {
        limited!(self, self.inner.latest_payments(limit))
    }
    async fn orders_before(
        &self,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredOrder>, StoreError> {
        limited!(self, self.inner.orders_before(before_id, limit))
    }
    async fn alerts_before(
        &self,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        limited!(self, self.inner.alerts_before(before_id, limit))
    }
    async fn payments_before(
        &self,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredPayment>, StoreError> {
        limited!(self, self.inner.payments_before(before_id, limit))
    }
    async fn ping(&self) -> Result<(), StoreError> {
        limited!(self, self.inner.ping())
    }
    async fn record_canary_stages(
        &self,
        stages: Arc<Vec<orders_core::canary::CanaryStage>>,
    ) -> Result<(), StoreError> {
        limited!(self, self.inner.record_canary_stages(stages))
    }
    async fn canaries_before(
        &self,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<orders_core::canary::CanaryJourney>, StoreError> {
        limited!(self, self.inner.canaries_before(before_id, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts calls in flight and remembers the most seen at once.
    #[derive(Default)]
    struct Gauge {
        now: AtomicUsize,
        max: AtomicUsize,
    }

    #[async_trait]
    impl OrderStore for Gauge {
        async fn apply(&self, _: Arc<StoreBatch>) -> Result<BatchOutcome, StoreError> {
            Ok(BatchOutcome::default())
        }
        async fn totals(&self) -> Result<Totals, StoreError> {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.max.fetch_max(n, Ordering::SeqCst);
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            Ok(Totals::default())
        }
        async fn minute_windows(&self, _: i64, _: i64) -> Result<Vec<MinuteWindow>, StoreError> {
            Ok(vec![])
        }
        async fn max_order_id(&self) -> Result<Option<u64>, StoreError> {
            Ok(None)
        }
        async fn latest_orders(&self, _: &OrderQuery) -> Result<Vec<OrderDocument>, StoreError> {
            Ok(vec![])
        }
        async fn order(&self, _: u64) -> Result<Option<OrderDocument>, StoreError> {
            Ok(None)
        }
        async fn alert(&self, _: u64) -> Result<Option<StoredAlert>, StoreError> {
            Ok(None)
        }
        async fn payment(&self, _: u64) -> Result<Option<StoredPayment>, StoreError> {
            Ok(None)
        }
        async fn latest_alerts(&self, _: usize) -> Result<Vec<StoredAlert>, StoreError> {
            Ok(vec![])
        }
        async fn latest_payments(&self, _: usize) -> Result<Vec<StoredPayment>, StoreError> {
            Ok(vec![])
        }
        async fn orders_before(
            &self,
            _: Option<u64>,
            _: usize,
        ) -> Result<Vec<StoredOrder>, StoreError> {
            Ok(vec![])
        }
        async fn alerts_before(
            &self,
            _: Option<u64>,
            _: usize,
        ) -> Result<Vec<StoredAlert>, StoreError> {
            Ok(vec![])
        }
        async fn payments_before(
            &self,
            _: Option<u64>,
            _: usize,
        ) -> Result<Vec<StoredPayment>, StoreError> {
            Ok(vec![])
        }
        async fn record_canary_stages(
            &self,
            _: Arc<Vec<orders_core::canary::CanaryStage>>,
        ) -> Result<(), StoreError> {
            Ok(())
        }
        async fn canaries_before(
            &self,
            _: Option<u64>,
            _: usize,
        ) -> Result<Vec<orders_core::canary::CanaryJourney>, StoreError> {
            Ok(Vec::new())
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_calls_in_flight_than_the_bound() {
        let gauge = Arc::new(Gauge::default());
        let store = Arc::new(LimitedStore::new(gauge.clone(), 3));
        let calls: Vec<_> = (0..40)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { s.totals().await })
            })
            .collect();
        for c in calls {
            c.await.unwrap().unwrap();
        }
        assert_eq!(gauge.max.load(Ordering::SeqCst), 3);
    }
}
