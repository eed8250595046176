//! Fault points: places in the product where the fault-injection harness can make an actor
//! panic on its Nth message, delay it, or fail its next store call.
//!
//! They exist only with the cargo feature `fault-injection`; without it the macros
//! [`fault_point!`] and [`fault_store!`] expand to nothing (and `false`), so a release build
//! carries no trace of them.
//!
//! Faults are armed by rules, written as `KIND:ACTION[@N][xT][#ITEM]`, several separated by
//! commas:
//!
//! - `KIND`: the actor kind — `job_intake`, `task_intake`, `intake` (either), `planner`,
//!   `reconciler`,
//!   `rate_limiter`, `embedding_pool`, `embedding_worker`, `vector_writer`, `status_writer`,
//!   `retry_scheduler`;
//! - `ACTION`: `panic`, `delay=DURATION` (`250ms`, `5s`), `fail_store` (the next store call
//!   fails as if the store were unavailable) or `reject` (the vector writer's store refuses the
//!   points for good, as it would a point of the wrong dimension);
//! - `@N`: fire on the Nth matching message (or store call) counted from when the rule was
//!   armed (default 1);
//! - `xT`: fire T times in a row from there (default 1; `x0` = every time from then on);
//! - `#ITEM`: count only messages about this item id (embedding workers know their items).
//!
//! For example `EMBEDQ_FAULTS="embedding_worker:panic@3,status_writer:fail_store@2x2"`. Rules
//! from `EMBEDQ_FAULTS` apply to every daemon instance in the process; a test arms rules for one
//! in-process instance (its consumer name) with [`arm`]. With `EMBEDQ_FAULTS_LOG=FILE` every
//! fault that fires is also appended to FILE (`actor rule` per line), for a test driving the
//! daemon as a child process.

/// At the top of an actor's `handle`: panics or sleeps when a rule says so. `$name` is the
/// actor's registered name (`instance/role`); the optional second argument lists the item ids
/// the message is about.
#[cfg(feature = "fault-injection")]
macro_rules! fault_point {
    ($myself:expr) => {
        if $crate::fault::armed() {
            $crate::fault::on_message($myself.get_name().as_deref(), &[]).await
        }
    };
    ($myself:expr, $items:expr) => {
        if $crate::fault::armed() {
            $crate::fault::on_message($myself.get_name().as_deref(), $items).await
        }
    };
}

#[cfg(not(feature = "fault-injection"))]
macro_rules! fault_point {
    ($($ignored:tt)*) => {};
}

/// Before a store call: `Some(reason)` when a rule says this call fails. `$name` is the
/// registered name of the actor (or of any actor of the same instance, with `$kind` given).
#[cfg(feature = "fault-injection")]
macro_rules! fault_store {
    ($myself:expr) => {
        if $crate::fault::armed() {
            $crate::fault::store_call($myself.get_name().as_deref(), None)
        } else {
            None
        }
    };
    ($name:expr, $kind:expr) => {
        if $crate::fault::armed() {
            $crate::fault::store_call(Some($name), Some($kind))
        } else {
            None
        }
    };
}

#[cfg(not(feature = "fault-injection"))]
macro_rules! fault_store {
    ($($ignored:tt)*) => {
        None::<String>
    };
}

/// Before a vector write: `Some(reason)` when a `reject` rule says the store refuses these
/// items' points.
#[cfg(feature = "fault-injection")]
macro_rules! fault_reject {
    ($myself:expr, $items:expr) => {
        if $crate::fault::armed() {
            $crate::fault::rejected($myself.get_name().as_deref(), $items)
        } else {
            None
        }
    };
}

#[cfg(not(feature = "fault-injection"))]
macro_rules! fault_reject {
    ($($ignored:tt)*) => {
        None::<String>
    };
}

pub(crate) use fault_point;
pub(crate) use fault_reject;
pub(crate) use fault_store;

#[cfg(feature = "fault-injection")]
pub use enabled::*;

#[cfg(feature = "fault-injection")]
mod enabled {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};
    use std::time::Duration;

    /// Whether any rule was ever armed: the fault points cost one atomic load until one is.
    static ARMED: AtomicBool = AtomicBool::new(false);

    /// Whether fault points need to look at the rules at all.
    #[inline]
    pub fn armed() -> bool {
        LazyLock::force(&REGISTRY);
        ARMED.load(Ordering::Relaxed)
    }

    /// What a rule does when it fires.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Action {
        Panic,
        Delay(Duration),
        FailStore,
        Reject,
    }

    /// The kind of event a rule counts: messages, store calls, or vector writes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Event {
        Message,
        StoreCall,
        Write,
    }

    impl Action {
        fn counts(&self) -> Event {
            match self {
                Self::Panic | Self::Delay(_) => Event::Message,
                Self::FailStore => Event::StoreCall,
                Self::Reject => Event::Write,
            }
        }
    }

    /// One armed fault.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Rule {
        /// Only this daemon instance (consumer name); `None`: every instance.
        pub instance: Option<String>,
        pub kind: String,
        pub action: Action,
        /// Fires on the Nth matching event (1-based).
        pub at: u64,
        /// How many times it fires; 0: every time from the Nth on.
        pub times: u64,
        /// Only events about this item.
        pub item: Option<String>,
    }

    /// A fault that fired.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Fired {
        pub instance: String,
        pub actor: String,
        pub rule: String,
        /// The item ids of the message it fired on (a worker's request), when known.
        pub items: Vec<String>,
    }

    struct Armed {
        rule: Rule,
        text: String,
        seen: u64,
        fired: u64,
    }

    struct Registry {
        rules: Vec<Armed>,
        fired: Vec<Fired>,
    }

    pub const KINDS: &[&str] = &[
        "job_intake",
        "task_intake",
        "intake",
        "planner",
        "reconciler",
        "rate_limiter",
        "embedding_pool",
        "embedding_worker",
        "vector_writer",
        "status_writer",
        "retry_scheduler",
    ];

    static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| {
        let mut registry = Registry {
            rules: Vec::new(),
            fired: Vec::new(),
        };
        if let Ok(spec) = std::env::var("EMBEDQ_FAULTS") {
            match parse(&spec) {
                Ok(rules) => {
                    tracing::warn!(%spec, "fault injection armed from EMBEDQ_FAULTS");
                    ARMED.store(!rules.is_empty(), Ordering::Relaxed);
                    registry.rules.extend(rules.into_iter().map(armed_rule));
                }
                Err(e) => tracing::error!(%spec, error = %e, "EMBEDQ_FAULTS ignored"),
            }
        }
        Mutex::new(registry)
    });

    fn registry() -> MutexGuard<'static, Registry> {
        REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn armed_rule(rule: Rule) -> Armed {
        Armed {
            text: describe(&rule),
            rule,
            seen: 0,
            fired: 0,
        }
    }

    /// The rule written back in the `KIND:ACTION@NxT#ITEM` form.
    pub fn describe(rule: &Rule) -> String {
        let action = match &rule.action {
            Action::Panic => "panic".to_owned(),
            Action::Delay(d) => format!("delay={}ms", d.as_millis()),
            Action::FailStore => "fail_store".to_owned(),
            Action::Reject => "reject".to_owned(),
        };
        let mut text = format!("{}:{action}@{}x{}", rule.kind, rule.at, rule.times);
        if let Some(item) = &rule.item {
            text.push('#');
            text.push_str(item);
        }
        text
    }

    fn duration(text: &str) -> Result<Duration, String> {
        let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => text.split_at(i),
            None => (text, "ms"),
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("bad duration {text:?}"))?;
        match unit {
            "ms" => Ok(Duration::from_millis(n)),
            "s" => Ok(Duration::from_secs(n)),
            _ => Err(format!("bad duration unit in {text:?} (ms or s)")),
        }
    }

    /// Parses comma-separated rules (for every instance).
    pub fn parse(spec: &str) -> Result<Vec<Rule>, String> {
        spec.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_rule)
            .collect()
    }

    fn parse_rule(text: &str) -> Result<Rule, String> {
        let (kind, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?}: expected KIND:ACTION"))?;
        if !KINDS.contains(&kind) {
            return Err(format!("{text:?}: unknown actor kind {kind:?}"));
        }
        let (rest, item) = match rest.split_once('#') {
            Some((r, item)) => (r, Some(item.to_owned())),
            None => (rest, None),
        };
        let (rest, times) = match rest.rsplit_once('x') {
            Some((r, t)) if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) => {
                (r, t.parse().map_err(|_| format!("{text:?}: bad count"))?)
            }
            _ => (rest, 1),
        };
        let (action, at) = match rest.split_once('@') {
            Some((a, n)) => (
                a,
                n.parse::<u64>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("{text:?}: bad @N"))?,
            ),
            None => (rest, 1),
        };
        let action = match action.split_once('=') {
            None if action == "panic" => Action::Panic,
            None if action == "fail_store" => Action::FailStore,
            None if action == "reject" => Action::Reject,
            Some(("delay", d)) => Action::Delay(duration(d)?),
            _ => return Err(format!("{text:?}: unknown action {action:?}")),
        };
        Ok(Rule {
            instance: None,
            kind: kind.to_owned(),
            action,
            at,
            times,
            item,
        })
    }

    /// Arms rules for one instance (`Some(consumer name)`) or for every instance.
    pub fn arm(instance: Option<&str>, spec: &str) -> Result<Vec<Rule>, String> {
        let mut rules = parse(spec)?;
        for r in &mut rules {
            r.instance = instance.map(str::to_owned);
        }
        let mut reg = registry();
        reg.rules.extend(rules.iter().cloned().map(armed_rule));
        ARMED.store(true, Ordering::Relaxed);
        Ok(rules)
    }

    /// Removes the rules of one instance (or those for every instance, with `None`).
    pub fn disarm(instance: Option<&str>) {
        registry()
            .rules
            .retain(|a| a.rule.instance.as_deref() != instance);
    }

    /// Faults fired so far for `instance` (`None`: all).
    pub fn fired(instance: Option<&str>) -> Vec<Fired> {
        registry()
            .fired
            .iter()
            .filter(|f| instance.is_none_or(|i| f.instance == i))
            .cloned()
            .collect()
    }

    /// `instance/role` → (instance, kind).
    fn split(name: &str) -> (&str, &str) {
        let (instance, role) = name.rsplit_once('/').unwrap_or(("", name));
        let kind = if role.starts_with("worker-") {
            "embedding_worker"
        } else {
            role
        };
        (instance, kind)
    }

    fn kind_matches(rule: &str, kind: &str) -> bool {
        rule == kind || (rule == "intake" && kind.ends_with("_intake"))
    }

    /// Counts the event against every matching rule; returns the action of the first that
    /// fires.
    fn hit(
        name: &str,
        kind_override: Option<&str>,
        items: &[&str],
        event: Event,
    ) -> Option<Action> {
        let (instance, kind) = split(name);
        let kind = kind_override.unwrap_or(kind);
        let mut reg = registry();
        let mut action = None;
        let mut fired = Vec::new();
        for armed in reg.rules.iter_mut() {
            let rule = &armed.rule;
            if rule.action.counts() != event
                || !kind_matches(&rule.kind, kind)
                || rule.instance.as_deref().is_some_and(|i| i != instance)
                || rule
                    .item
                    .as_deref()
                    .is_some_and(|item| !items.contains(&item))
            {
                continue;
            }
            armed.seen += 1;
            let due = armed.seen >= rule.at && (rule.times == 0 || armed.fired < rule.times);
            if due && action.is_none() {
                armed.fired += 1;
                action = Some(rule.action.clone());
                fired.push(Fired {
                    instance: instance.to_owned(),
                    actor: name.to_owned(),
                    rule: armed.text.clone(),
                    items: items.iter().map(|i| (*i).to_owned()).collect(),
                });
            }
        }
        for f in &fired {
            tracing::warn!(actor = %f.actor, rule = %f.rule, "fault injected");
            if let Ok(path) = std::env::var("EMBEDQ_FAULTS_LOG") {
                use std::io::Write;
                if let Ok(mut file) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                {
                    let _ = writeln!(file, "{} {}", f.actor, f.rule);
                }
            }
        }
        reg.fired.extend(fired);
        action
    }

    /// A message arrived at the actor `name`.
    pub async fn on_message(name: Option<&str>, items: &[&str]) {
        let Some(name) = name else { return };
        match hit(name, None, items, Event::Message) {
            Some(Action::Panic) => panic!("fault injected: {name} panics"),
            Some(Action::Delay(d)) => tokio::time::sleep(d).await,
            _ => {}
        }
    }

    /// A store call by the actor `name` (or of kind `kind` in `name`'s instance).
    pub fn store_call(name: Option<&str>, kind: Option<&str>) -> Option<String> {
        let name = name?;
        match hit(name, kind, &[], Event::StoreCall) {
            Some(Action::FailStore) => Some(format!(
                "fault injected: store call of {} fails",
                kind.unwrap_or(name)
            )),
            _ => None,
        }
    }

    /// A vector write of these items by the actor `name`.
    pub fn rejected(name: Option<&str>, items: &[&str]) -> Option<String> {
        let name = name?;
        match hit(name, None, items, Event::Write) {
            Some(Action::Reject) => Some("fault injected: the store refuses these points".into()),
            _ => None,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rules_parse() {
            let r = parse(
                "embedding_worker:panic@3, vector_writer:fail_store@2x0,planner:delay=250ms#it-1",
            )
            .unwrap();
            assert_eq!(r.len(), 3);
            assert_eq!(
                (r[0].action.clone(), r[0].at, r[0].times),
                (Action::Panic, 3, 1)
            );
            assert_eq!(
                (r[1].action.clone(), r[1].at, r[1].times),
                (Action::FailStore, 2, 0)
            );
            assert_eq!(r[2].action, Action::Delay(Duration::from_millis(250)));
            assert_eq!(r[2].item.as_deref(), Some("it-1"));
            assert_eq!(
                parse("planner:delay=2s").unwrap()[0].action,
                Action::Delay(Duration::from_secs(2))
            );
            assert!(parse("nobody:panic").is_err());
            assert!(parse("planner:explode").is_err());
            assert!(parse("planner:panic@0").is_err());
        }

        #[test]
        fn rules_fire_on_the_nth_event_of_their_instance() {
            arm(Some("unit-a"), "rate_limiter:panic@2x2").unwrap();
            let name = "unit-a/rate_limiter";
            let message = Event::Message;
            assert_eq!(hit("unit-b/rate_limiter", None, &[], message), None);
            assert_eq!(hit(name, None, &[], message), None);
            assert_eq!(
                hit(name, None, &[], Event::StoreCall),
                None,
                "store calls are counted apart"
            );
            assert_eq!(hit(name, None, &[], message), Some(Action::Panic));
            assert_eq!(hit(name, None, &[], message), Some(Action::Panic));
            assert_eq!(hit(name, None, &[], message), None);
            assert_eq!(fired(Some("unit-a")).len(), 2);
            disarm(Some("unit-a"));
            arm(Some("unit-a"), "embedding_worker:fail_store#x-1").unwrap();
            assert_eq!(store_call(Some("unit-a/worker-3"), None), None);
            assert_eq!(
                hit("unit-a/worker-3", None, &["x-1"], Event::StoreCall),
                Some(Action::FailStore)
            );
            disarm(Some("unit-a"));
            arm(Some("unit-a"), "vector_writer:reject@1x0#x-2").unwrap();
            assert_eq!(rejected(Some("unit-a/vector_writer"), &["x-1"]), None);
            assert!(rejected(Some("unit-a/vector_writer"), &["x-1", "x-2"]).is_some());
            assert!(rejected(Some("unit-a/vector_writer"), &["x-2"]).is_some());
            disarm(Some("unit-a"));
        }
    }
}
