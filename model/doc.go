// Package model holds the values that flow between pgtripwire's parts: the Event every
// source produces and every rule reads, the Alert the rules produce and every sink
// delivers, and the identifier quoting that makes their relation names canonical. Both
// the daemon (detector/...) and the rule engine (rules/...) import it; it imports
// neither, as Prometheus' model/ stands apart from its rules/ and scrape/.
//
// It is not for behaviour: sources build events, rules evaluate them, sinks deliver
// alerts; model only defines them.
package model
