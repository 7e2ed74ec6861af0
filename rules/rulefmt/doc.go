// Package rulefmt is pgtripwire's rule file format: it parses rule files,
// validates them strictly and compiles their CEL match expressions, reporting
// every problem at once with its file:line:col, positions inside CEL
// expressions included.
//
// It is not the rule engine: windows, aggregation state, baselines, first-seen
// sets and the alert state machine belong to the engine, which takes the
// compiled rules from here (as Prometheus keeps model/rulefmt apart from
// rules/). Nothing here keeps state or looks at the clock.
//
// # Format
//
// A rule file is YAML holding groups of rules (docs/rules.md has the full
// reference):
//
//	groups:
//	  - name: credentials              # unique within the file
//	    rules:
//	      - name: PaginatedSweep       # [A-Za-z][A-Za-z0-9_]*, unique across all files
//	        description: …             # what it detects and how to tune it (required)
//	        severity: critical         # critical | warning | info (required)
//	        tags: [exfiltration]
//	        mode: page                 # page (default) | shadow: record and count, do not deliver
//	        match: 'size(event.sensitive_read) > 0'   # CEL over `event`, must be a bool (required)
//	        aggregate:                 # optional
//	          function: sum            # count | sum | max | count_distinct
//	          field: rows              # sum/max: rows, calls, rows_per_call; count_distinct: a label field
//	          window: 10m              # Go duration or 1d / 2w / 1y; > 0
//	          by: [database, relation, role]
//	        condition:                 # exactly one; optional only without aggregate (every match fires)
//	          threshold: {op: ">=", value: 10000}   # without aggregate also field: <numeric field>
//	          # baseline: {learn_for: 7d, z_score: 4, floor: 10000}          (needs an aggregate)
//	          # first_seen: {key: [role, client_addr, relation], learn_for: 7d, forget_after: 90d}
//	        for: 0s
//	        keep_firing_for: 5m
//	        exceptions:                # allow-list tuples, AND within a tuple
//	          - {role: etl, application: nightly-export, expires: 2027-01-31}
//	          - {client_cidr: 10.20.0.0/16}
//	          - {queryid: 1234567890}
//	        labels: {team: security}   # text/template, like annotations
//	        annotations:
//	          summary: 'Sweep of {{ .Labels.relation }} by {{ .Labels.role }}'
//
// Unknown keys are errors everywhere. Null values count as absent.
//
// # The event in CEL
//
// match sees one variable, event, of type pgtripwire.Event, read directly from
// an event.Event: time (timestamp), source, database, role, client_addr,
// application, operation, relation (strings), sensitive_read and
// sensitive_referenced (list(string)), complete (bool), rows, calls,
// rows_per_call, query_id and lsn (int; lsn is 0 until WAL events carry it).
// has(event.x) is false for an empty string, a zero time, a zero query_id and
// lsn. Every expression is type-checked and planned once at load; evaluation
// is bounded by a cost limit, so a runaway expression fails instead of
// stalling the pipeline.
//
// Expressions in a common subset (field selection, has(), string, int and
// bool literals, comparisons, &&, ||, !, size() of a list, `in`,
// startsWith/endsWith/contains) are also compiled to a Go closure that
// gives the same result without the interpreter's allocations
// (Rule.MatchEvent, Rule.NativeMatch; native.go); the rest runs in CEL.
// Rule.Sources reads the sources a match pins (event.source == "wal" as a
// top-level conjunct) so that an evaluator can skip the rule for others.
//
// # Positions
//
// Errors are "file:line:col: message", in file order. An error inside a CEL
// expression is placed on the offending token: exactly for single-line plain
// and quoted scalars (a doubled single quote or a backslash escape counted)
// and for literal block scalars (|). For folded block scalars (>) and
// multi-line flow scalars the text is located by walking the source lines,
// folding each break into one space; an empty or more-indented line inside
// the scalar changes the count, so after one the position may be a line or a
// few columns off, still inside the right scalar. Template errors carry the
// line (text/template reports no column for parse errors). YAML syntax errors
// carry the line, and the column when a prefix of the line already fails the
// same way (an unclosed quote points at the quote).
package rulefmt
