//! The provider's rate budget, kept in Redis so every worker of every daemon draws from one:
//! two token buckets (requests and tokens per minute) refilled continuously, plus a global hold
//! that one 429 sets for everyone. All arithmetic runs in Lua scripts on Redis's clock, so
//! daemons with skewed clocks still share one budget exactly.
//!
//! Why not `governor`: it keeps its state in process memory, and N daemons would get N times
//! the provider's limit — the Celery `rate_limit` failure this design exists to avoid.

use super::{Keys, QueueError};
use redis::aio::ConnectionManager;
use std::sync::LazyLock;
use std::time::Duration;

const NOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

/// ARGV: requests/min, tokens/min, burst seconds, cost in tokens. Returns 0 when granted, or
/// the milliseconds to wait. Tokens may go into debt by one request's cost, so a request larger
/// than the bucket still passes and the long-run rate stays exact.
static TAKE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        r#"{NOW}
local rpm = tonumber(ARGV[1]); local tpm = tonumber(ARGV[2])
local burst = tonumber(ARGV[3]); local cost = tonumber(ARGV[4])
local rcap = math.max(1, rpm * burst / 60); local tcap = math.max(1, tpm * burst / 60)
local h = redis.call('HMGET', KEYS[1], 'r', 't', 'ts', 'hold')
local r = tonumber(h[1]) or rcap
local tk = tonumber(h[2]) or tcap
local ts = tonumber(h[3]) or now
local hold = tonumber(h[4]) or 0
if now < hold then return hold - now end
local el = math.max(0, now - ts)
r = math.min(rcap, r + el * rpm / 60000)
tk = math.min(tcap, tk + el * tpm / 60000)
local wait = 0
if r < 1 then wait = math.ceil((1 - r) * 60000 / rpm) end
if tk < 0 then wait = math.max(wait, math.ceil(-tk * 60000 / tpm)) end
if wait == 0 then
  r = r - 1
  tk = tk - cost
end
redis.call('HSET', KEYS[1], 'r', tostring(r), 't', tostring(tk), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 300000)
return wait
"#
    ))
});

/// ARGV: milliseconds. Nobody is granted anything before now + ms.
static HOLD: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        r#"{NOW}
local until_ms = now + tonumber(ARGV[1])
local hold = tonumber(redis.call('HGET', KEYS[1], 'hold')) or 0
if until_ms > hold then redis.call('HSET', KEYS[1], 'hold', tostring(until_ms)) end
redis.call('PEXPIRE', KEYS[1], 300000)
return until_ms - now
"#
    ))
});

/// ARGV: remaining requests, remaining tokens (-1 = unknown). Lowers the buckets to what the
/// provider says is left; never raises them.
static CORRECT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local rr = tonumber(ARGV[1]); local rt = tonumber(ARGV[2])
local h = redis.call('HMGET', KEYS[1], 'r', 't')
local r = tonumber(h[1]); local tk = tonumber(h[2])
if r and rr >= 0 and rr < r then redis.call('HSET', KEYS[1], 'r', tostring(rr)) end
if tk and rt >= 0 and rt < tk then redis.call('HSET', KEYS[1], 't', tostring(rt)) end
return 1
"#,
    )
});

/// ARGV: tokens/min, burst seconds, tokens to charge (negative: give back). A request whose
/// size became known after its permit (or whose provider counted otherwise) is charged the
/// difference; a refund never raises the bucket above its size.
static CHARGE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local tpm = tonumber(ARGV[1]); local burst = tonumber(ARGV[2]); local delta = tonumber(ARGV[3])
local tcap = math.max(1, tpm * burst / 60)
local tk = tonumber(redis.call('HGET', KEYS[1], 't'))
if not tk then return 0 end
tk = math.min(tcap, tk - delta)
redis.call('HSET', KEYS[1], 't', tostring(tk))
return 1
"#,
    )
});

/// How the budget is configured.
#[derive(Debug, Clone, Copy)]
pub struct BudgetLimits {
    pub requests_per_minute: u64,
    pub tokens_per_minute: u64,
    pub burst_seconds: f64,
}

#[derive(Clone)]
pub struct RateBudget {
    conn: ConnectionManager,
    key: String,
    limits: BudgetLimits,
}

impl RateBudget {
    pub fn new(conn: ConnectionManager, keys: &Keys, limits: BudgetLimits) -> Self {
        Self {
            conn,
            key: keys.rate_budget(),
            limits,
        }
    }

    /// Takes one request costing `tokens`, or says how long to wait first.
    pub async fn take(&self, tokens: u64) -> Result<Option<Duration>, QueueError> {
        let mut conn = self.conn.clone();
        let wait: u64 = TAKE
            .key(&self.key)
            .arg(self.limits.requests_per_minute)
            .arg(self.limits.tokens_per_minute)
            .arg(self.limits.burst_seconds)
            .arg(tokens)
            .invoke_async(&mut conn)
            .await?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }

    /// Charges `delta` more tokens to the budget (a negative `delta` gives them back).
    pub async fn charge(&self, delta: i64) -> Result<(), QueueError> {
        if delta == 0 {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let _: i64 = CHARGE
            .key(&self.key)
            .arg(self.limits.tokens_per_minute)
            .arg(self.limits.burst_seconds)
            .arg(delta)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Holds every taker, in every daemon, for `wait`.
    pub async fn hold(&self, wait: Duration) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let _: i64 = HOLD
            .key(&self.key)
            .arg(wait.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Lowers the buckets to the provider's remaining counts.
    pub async fn correct(
        &self,
        remaining_requests: Option<u64>,
        remaining_tokens: Option<u64>,
    ) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let as_arg = |v: Option<u64>| v.map(|n| n as i64).unwrap_or(-1);
        let _: i64 = CORRECT
            .key(&self.key)
            .arg(as_arg(remaining_requests))
            .arg(as_arg(remaining_tokens))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}
