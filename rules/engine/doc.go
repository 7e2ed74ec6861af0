// Package engine evaluates compiled rules (package rulefmt) on events and
// turns them into alert transitions: CEL match, exceptions, a windowed
// aggregate per group, a threshold, baseline or first-seen condition, and a
// pending → firing → resolved state machine like Prometheus'. It implements
// the detector's Evaluator (Eval, Tick, Rules).
//
// It is not the rule file format (rulefmt), nor delivery: transitions are
// returned to the caller, which writes and delivers them. It never reads the
// clock: every method takes `now`.
//
// # Wiring
//
//	groups, errs := rulefmt.LoadFiles(paths...)          // or the embedded default pack
//	eng, err := engine.New(groups, engine.Options{
//		StatePath:    filepath.Join(cfg.StateDir, "rules.json"), // "" = no persistence
//		ResolveAfter: cfg.Alerts.ResolveAfter,                   // default 5m
//		MaxGroups:    10_000,                                    // default
//		Logger:       logger, Registerer: reg,
//	})
//	var eval detector.Evaluator = eng                  // Eval(now, ev), Tick(now), Rules()
//	err = eng.Reload(newGroups)                        // on SIGHUP / file change; on error the old rules stay
//	err = eng.Close(now)                               // at shutdown: saves the state
//
// Tick must be called regularly (the pipeline does every second): it
// resolves alerts, moves pending alerts to firing, samples baselines,
// forgets idle groups, updates metrics and saves the state. The engine is
// safe for concurrent use (one mutex). New registers the metrics on
// Registerer: create one engine per registry (reload, do not re-create).
//
// # Groups and labels
//
// A rule with an aggregate groups events by aggregate.by; a first_seen rule
// by its key; a rule without aggregate by the alert contract's fields
// (source, database, relation, columns, role, client_addr, application,
// where columns is sensitive_read, or changed when nothing was read). A
// group's labels are its fields' values under the contract's names:
// relation → table, sensitive_read → columns (sorted, comma-joined), changed
// → columns (unless sensitive_read is also grouped by), other fields keep
// their names; empty values (and zero query_id, lsn, pid) are omitted. When
// the group has no source field and the match pins one source
// (event.source == "wal" as a top-level conjunct), the label source is that
// source. The rule's labels: are added after templating. The fingerprint is
// alert.Fingerprint(rule, labels); templates see .Labels (the labels, plus
// the by-field names such as .Labels.relation) and .Value.
//
// # Conditions and values
//
//   - threshold with aggregate: the aggregate of the group's window, at
//     every matching event and at every Tick (so windows sliding away
//     resolve alerts).
//   - baseline: each group's aggregate is sampled once per window length
//     (periods aligned on the Unix epoch, at the first Tick of a period) into
//     an EWMA mean and variance with weight α = 2/(N+1), N = learn_for /
//     window (at least 2): the baseline remembers about learn_for of history.
//     It fires when learn_for has passed since the rule was first evaluated,
//     the aggregate is at least floor and above mean + z_score × stddev. A
//     group that first appears after learning has mean 0 and stddev 0: it
//     fires as soon as it reaches floor. A group does not learn while its
//     alert is pending or firing. Missed periods (detector down) are not
//     filled in.
//   - first_seen: keys seen during learn_for (from the rule's first
//     evaluation) are normal; after it, an event with a key not seen, or not
//     seen within forget_after, fires, and the key is remembered. With
//     learn_per (fields of the key), each value of those fields has its own
//     learning period, from its first matching event (a role deployed late
//     learns its own first minutes); the values and their starts are kept
//     like keys (at most MaxGroups, forgotten after forget_after without an
//     event). With remember: learning, only keys seen while learning are
//     remembered: any other key is new at every event.
//   - first_seen beside an aggregate and a threshold: the events whose key
//     is new (as above) are counted in the windows of aggregate.by, and the
//     threshold fires: one alert per group (a role), whose value is, say,
//     how many new statements it ran, rather than one per key.
//   - no aggregate: every matching event (passing threshold.field op value
//     when there is a threshold) is a value; the alert's value is the
//     largest since it became active.
//
// The alert value of an aggregate rule is the aggregate. The firing transition
// carries the value when it fired; the resolved one the largest value reached
// while firing (how much was read in all, not the 0 of a window gone quiet).
//
// # State machine and resolution
//
// Per group: inactive → pending when the condition holds → firing once it
// has held for `for` (checked at events and at Tick) → resolved when it has
// not held for keep_firing_for. Only firing and resolved transitions are
// returned. Rules with an aggregate resolve when the window no longer meets
// the condition (evaluated at Tick). Rules without aggregate and first_seen
// rules have no window: their condition holds for keep_firing_for after each
// passing event, or Options.ResolveAfter (default 5m) when keep_firing_for
// is 0, and they resolve then.
//
// # Windows
//
// A window is 60 buckets of window/60 each, aligned on the Unix epoch: memory
// per group is constant (~0.5 KB) whatever the event rate. An event counts
// from `now` until its bucket leaves the window, between window×59/60 and
// window later. count_distinct keeps each value's last bucket, at most 1,000
// values per group (the count saturates at 1,000).
//
// # Exceptions and shadow mode
//
// A matching event allowed by an unexpired exception (every field it sets
// matches; client_cidr contains the event's client address) is not counted:
// pgtripwire_rule_excepted_events_total. Expired exceptions are ignored,
// logged once and counted in the gauge pgtripwire_rule_exceptions_expired.
//
// A rule in mode shadow runs completely (groups, state, persistence), but
// its transitions are NOT returned by Eval/Tick: they are logged ("shadow
// rule alert (not delivered)") and firing ones counted in
// pgtripwire_rule_shadow_alerts_total{rule}. Rules() leaves shadow rules
// out. An alert that fired in page mode and resolves after the rule was
// switched to shadow still returns its resolved transition, and the reverse.
//
// # Bounded memory
//
// A rule tracks at most MaxGroups groups. The events of further groups are
// counted together in one overflow group per rule (labels: the fixed ones
// and overflow="true"), which can fire like any group; each such event is
// counted in pgtripwire_rule_groups_overflow_total{rule} and raises the
// warning alert RuleGroupOverflow{rule=…}, which resolves ResolveAfter after
// the last overflow. A first_seen rule remembers at most MaxGroups keys: a
// new key beyond it makes the rule forget the key seen longest ago (it will
// fire again if it comes back), counted and alerted the same way. Idle
// groups (empty window, no alert; for baselines, stats no stricter than the
// floor) are forgotten at Tick.
//
// # Persistence
//
// With StatePath, Tick saves the whole state (windows, baselines,
// first-seen keys with last-seen times, pending and firing alerts with their
// activation and firing times, the learning start of each rule) as versioned
// JSON, atomically (internal/atomicfile), at the first Tick after
// a transition and at least every SaveInterval (30s); Save and Close save
// now. Saving after the transition is returned, not before, makes the
// detector at-least-once: a crash between the alert line and the save may
// repeat a firing line after restart, never lose one. New restores the
// state of rules whose match, aggregate and condition are unchanged: an
// alert firing before a restart stays firing, without a second firing
// transition; firing alerts of rules that changed or vanished are resolved
// at the first Tick. A corrupt file or one of another version is logged as a
// warning, moved to StatePath+".corrupt", and the engine starts fresh; a
// file that cannot be read is an error of New.
//
// # Metrics
//
// pgtripwire_rule_evaluations_total, _matches_total, _excepted_events_total,
// _evaluation_errors_total, _groups_overflow_total, _shadow_alerts_total
// (counters by rule, added at Tick), pgtripwire_rule_alerts{rule,state},
// pgtripwire_rule_groups{rule}, pgtripwire_rule_exceptions_expired{rule}
// (gauges, at Tick), pgtripwire_rule_state_saves_total{result}. An
// evaluation error (runtime error, cost limit) counts as no match and is
// logged at most once a minute per rule.
//
// # Performance
//
// Rules whose match pins event.source are only evaluated on events of that
// source; match expressions in rulefmt's native subset run without the CEL
// interpreter; group keys are hashed (maphash) and compared without
// allocating. See BenchmarkEngine.
package engine
