package catalog

import (
	"fmt"
	"slices"
	"strings"
)

// UniqueKey is a unique index or the primary key of a relation: equality on
// every one of its parts selects at most one row. Only indexes that
// PostgreSQL enforces on every row are keys: partial unique indexes (their
// predicate exempts rows) and invalid ones (a failed CREATE UNIQUE INDEX
// CONCURRENTLY) are not loaded.
type UniqueKey struct {
	// Name is the index's name, for logs and tests.
	Name string
	// Primary is set for the primary key.
	Primary bool
	// Parts are the key columns in index order (INCLUDE columns left out).
	Parts []KeyPart
}

// KeyPart is one key column of a UniqueKey: a column of the relation, or an
// expression over its columns.
type KeyPart struct {
	// Column is the column's name as PostgreSQL stores it, "" for an
	// expression.
	Column string
	// Expression is, for an expression column, its text as
	// pg_get_indexdef(index, column, true) prints it (lower(email),
	// upper(email::text)): SQL the classifier parses to match predicates
	// against. "" for a plain column.
	Expression string
}

func (p KeyPart) String() string {
	if p.Expression != "" {
		return "(" + p.Expression + ")"
	}
	return p.Column
}

func (k UniqueKey) String() string {
	parts := make([]string, len(k.Parts))
	for i, p := range k.Parts {
		parts[i] = p.String()
	}
	return k.Name + "(" + strings.Join(parts, ", ") + ")"
}

// sameParts reports whether two keys have the same parts in the same order.
func (k UniqueKey) sameParts(o UniqueKey) bool { return slices.Equal(k.Parts, o.Parts) }

func cloneKeys(keys []UniqueKey) []UniqueKey {
	out := slices.Clone(keys)
	for i := range out {
		out[i].Parts = slices.Clone(out[i].Parts)
	}
	// A canonical order keeps the version independent of the loading order.
	slices.SortFunc(out, func(a, b UniqueKey) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func checkKeys(r *Relation) error {
	for _, k := range r.UniqueKeys {
		if len(k.Parts) == 0 {
			return fmt.Errorf("relation %s: unique key %q has no parts", r.QualifiedName(), k.Name)
		}
		for _, p := range k.Parts {
			if (p.Column == "") == (p.Expression == "") {
				return fmt.Errorf("relation %s: unique key %q: a part must be a column or an expression", r.QualifiedName(), k.Name)
			}
		}
	}
	return nil
}

// UniqueKeys returns the keys under which a scan of the relation named by
// qualified (QualifiedName form) returns at most one row per key value.
// withDescendants says whether the scan includes inheritance children (FROM
// t, not FROM ONLY t): a plain inheritance parent's unique index does not
// span its children, so a key counts only when every descendant has a key
// with the same parts. A partitioned table's unique indexes span its
// partitions by construction. The slice is shared and must not be modified.
func (s *Snapshot) UniqueKeys(qualified string, withDescendants bool) []UniqueKey {
	r, ok := s.byQualified[qualified]
	if !ok {
		return nil
	}
	if withDescendants && r.Kind != PartitionedTable && len(s.children[qualified]) > 0 {
		return s.inheritedKeys[qualified]
	}
	return r.UniqueKeys
}

// indexChildren records the inheritance children of every relation and, for
// plain inheritance parents, the keys that hold across all descendants.
func (s *Snapshot) indexChildren() {
	s.children = make(map[string][]string)
	for _, r := range s.relations {
		for _, p := range r.Inherits {
			s.children[p] = append(s.children[p], r.QualifiedName())
		}
	}
	s.inheritedKeys = make(map[string][]UniqueKey)
	for parent := range s.children {
		r, ok := s.byQualified[parent]
		if !ok || r.Kind == PartitionedTable {
			continue
		}
		var keys []UniqueKey
		for _, k := range r.UniqueKeys {
			if s.descendantsHave(parent, k, map[string]bool{parent: true}) {
				keys = append(keys, k)
			}
		}
		s.inheritedKeys[parent] = keys
	}
}

func (s *Snapshot) descendantsHave(parent string, k UniqueKey, seen map[string]bool) bool {
	for _, c := range s.children[parent] {
		if seen[c] {
			continue
		}
		seen[c] = true
		child, ok := s.byQualified[c]
		if !ok || !slices.ContainsFunc(child.UniqueKeys, k.sameParts) {
			return false
		}
		if child.Kind != PartitionedTable && !s.descendantsHave(c, k, seen) {
			return false
		}
	}
	return true
}
