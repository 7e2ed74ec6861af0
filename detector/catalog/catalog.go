// Package catalog is an immutable snapshot of the monitored database's
// relations — their kinds, columns and view definitions — and of which of
// their columns are configured as sensitive. The classifier resolves SQL
// against it; the detector reloads it periodically and swaps snapshots.
//
// It is not a general catalog cache: it holds only what classification needs
// (relations, their columns, inheritance parents and unique keys, and the
// functions of non-system schemas with their bodies), and it does not parse
// SQL — view definitions, index expressions and function bodies are kept as
// text for the classifier. It holds no statistics: they change constantly,
// and a snapshot's Version must change only when classifications can.
package catalog

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"

	"github.com/pgtripwire/pgtripwire/model"
)

// Kind is the kind of a relation, with PostgreSQL's pg_class.relkind letters
// as values.
type Kind byte

// The relation kinds a Snapshot holds.
const (
	Table            Kind = 'r'
	PartitionedTable Kind = 'p'
	View             Kind = 'v'
	MaterializedView Kind = 'm'
	ForeignTable     Kind = 'f'
)

func (k Kind) String() string {
	switch k {
	case Table:
		return "table"
	case PartitionedTable:
		return "partitioned table"
	case View:
		return "view"
	case MaterializedView:
		return "materialized view"
	case ForeignTable:
		return "foreign table"
	}
	return fmt.Sprintf("Kind(%q)", byte(k))
}

func (k Kind) valid() bool {
	switch k {
	case Table, PartitionedTable, View, MaterializedView, ForeignTable:
		return true
	}
	return false
}

// HasDefinition reports whether relations of this kind are defined by a query
// (views and materialized views).
func (k Kind) HasDefinition() bool { return k == View || k == MaterializedView }

// Relation is one relation of the monitored database. Identifiers are stored
// as PostgreSQL stores them (already case-folded, unquoted).
type Relation struct {
	Schema, Name string
	Kind         Kind
	// Columns are the user columns in attnum order, dropped columns omitted.
	Columns []string
	// ViewDef is pg_get_viewdef's text for views and materialized views, ""
	// for other kinds. Unqualified names in it resolve through the snapshot's
	// ViewSearchPath.
	ViewDef string
	// Inherits are the direct parents of a partition or inheritance child
	// (pg_inherits), in QualifiedName form, in inhseqno order. A child of a
	// table with configured sensitive columns has the same columns sensitive
	// (see Snapshot.SensitiveOrigin).
	Inherits []string
	// UniqueKeys are the relation's primary key and unique indexes (see
	// UniqueKey), sorted by name. Table statistics (reltuples, relpages)
	// are deliberately not part of a snapshot: they change all the time and
	// would change its Version, discarding every cached classification.
	UniqueKeys []UniqueKey
}

// QualifiedName returns schema.name with each part quoted only where
// PostgreSQL's quote_ident would quote it, so public.users stays plain.
func (r *Relation) QualifiedName() string {
	return model.QualifiedName(r.Schema, r.Name)
}

// HasColumn reports whether the relation has a column with exactly this name.
func (r *Relation) HasColumn(name string) bool {
	return slices.Contains(r.Columns, name)
}

// Snapshot is an immutable view of the database's relations and of the
// sensitive-column configuration. It is safe for concurrent use. Pointers it
// returns point into the snapshot and must not be modified.
type Snapshot struct {
	relations      map[relKey]*Relation
	byQualified    map[string]*Relation
	sensitive      map[string]map[string]bool // qualified name -> column set
	sensitiveList  map[string][]string        // qualified name -> sorted columns
	sensitiveNamed map[string][]*Relation     // unqualified name -> sensitive relations
	named          map[string][]*Relation     // unqualified name -> relations, any schema
	missing        []string
	viewSearchPath []string
	version        string

	// origins maps a relation's column to the configured sensitive table it
	// inherits its sensitivity from (itself, or an ancestor).
	origins map[string]map[string]string

	functions     map[relKey][]*Function
	functionsList []*Function
	funcsNamed    map[string][]*Function

	// children are the direct inheritance children and partitions of each
	// relation; inheritedKeys the keys of plain inheritance parents that
	// hold across all their descendants (see UniqueKeys).
	children      map[string][]string
	inheritedKeys map[string][]UniqueKey
}

type relKey struct{ schema, name string }

// Option configures New.
type Option func(*Snapshot)

// WithViewSearchPath records the effective search_path (as current_schemas(true)
// returns it) under which view definitions were printed: pg_get_viewdef leaves
// a name unqualified exactly when that path finds it. The default is
// pg_catalog, public — PostgreSQL's default path without a $user schema.
func WithViewSearchPath(path []string) Option {
	return func(s *Snapshot) { s.viewSearchPath = slices.Clone(path) }
}

// WithFunctions adds the functions of the database's non-system schemas (see
// Function). Overloads share a schema and name.
func WithFunctions(fns []Function) Option {
	return func(s *Snapshot) {
		for i := range fns {
			f := fns[i]
			f.Args = slices.Clone(f.Args)
			f.ArgTypes = slices.Clone(f.ArgTypes)
			f.ResultColumns = slices.Clone(f.ResultColumns)
			f.SearchPath = slices.Clone(f.SearchPath)
			s.functionsList = append(s.functionsList, &f)
		}
	}
}

// New builds a snapshot from relations and the sensitive-column configuration,
// keyed by schema-qualified table name (public.users, or "My Schema"."Users";
// unquoted parts fold to lower case as in SQL) with column names under the same
// rules. Configured tables or columns that do not exist are not an error — the
// table may be created later — they are reported by Missing. New returns an
// error for malformed names and duplicate or invalid relations.
func New(relations []Relation, sensitive map[string][]string, opts ...Option) (*Snapshot, error) {
	s := &Snapshot{
		relations:      make(map[relKey]*Relation, len(relations)),
		byQualified:    make(map[string]*Relation, len(relations)),
		sensitive:      make(map[string]map[string]bool, len(sensitive)),
		sensitiveList:  make(map[string][]string, len(sensitive)),
		sensitiveNamed: make(map[string][]*Relation),
		named:          make(map[string][]*Relation),
		viewSearchPath: []string{"pg_catalog", "public"},
	}
	for _, opt := range opts {
		opt(s)
	}
	for i := range relations {
		r := relations[i]
		if r.Schema == "" || r.Name == "" {
			return nil, fmt.Errorf("relation %d: empty schema or name", i)
		}
		if !r.Kind.valid() {
			return nil, fmt.Errorf("relation %s: unsupported kind %v", r.QualifiedName(), r.Kind)
		}
		k := relKey{r.Schema, r.Name}
		if _, dup := s.relations[k]; dup {
			return nil, fmt.Errorf("relation %s: listed twice", r.QualifiedName())
		}
		r.Columns = slices.Clone(r.Columns)
		r.Inherits = slices.Clone(r.Inherits)
		r.UniqueKeys = cloneKeys(r.UniqueKeys)
		if err := checkKeys(&r); err != nil {
			return nil, err
		}
		for j, p := range r.Inherits {
			schema, name, err := ParseQualifiedName(p)
			if err != nil {
				return nil, fmt.Errorf("relation %s: parent: %w", r.QualifiedName(), err)
			}
			r.Inherits[j] = model.QualifiedName(schema, name)
		}
		s.relations[k] = &r
		s.byQualified[r.QualifiedName()] = &r
		s.named[r.Name] = append(s.named[r.Name], &r)
	}
	for _, rels := range s.named {
		sort.Slice(rels, func(i, j int) bool { return rels[i].QualifiedName() < rels[j].QualifiedName() })
	}
	for table, columns := range sensitive {
		schema, name, err := ParseQualifiedName(table)
		if err != nil {
			return nil, fmt.Errorf("sensitive table: %w", err)
		}
		q := model.QualifiedName(schema, name)
		set := s.sensitive[q]
		if set == nil {
			set = make(map[string]bool, len(columns))
			s.sensitive[q] = set
		}
		for _, c := range columns {
			col, err := ParseIdentifier(c)
			if err != nil {
				return nil, fmt.Errorf("sensitive table %s: column: %w", q, err)
			}
			set[col] = true
		}
		rel, ok := s.relations[relKey{schema, name}]
		if !ok {
			s.missing = append(s.missing, q)
			continue
		}
		for col := range set {
			if !rel.HasColumn(col) {
				s.missing = append(s.missing, q+"."+model.QuoteIdent(col))
			}
		}
	}
	for q, set := range s.sensitive {
		cols := make([]string, 0, len(set))
		for c := range set {
			cols = append(cols, c)
		}
		sort.Strings(cols)
		s.sensitiveList[q] = cols
		if rel, ok := s.byQualified[q]; ok && len(cols) > 0 {
			s.sensitiveNamed[rel.Name] = append(s.sensitiveNamed[rel.Name], rel)
		}
	}
	for _, rels := range s.sensitiveNamed {
		sort.Slice(rels, func(i, j int) bool { return rels[i].QualifiedName() < rels[j].QualifiedName() })
	}
	sort.Strings(s.missing)
	s.missing = slices.Compact(s.missing)
	s.origins = s.inheritSensitivity()
	s.indexChildren()
	if err := s.indexFunctions(); err != nil {
		return nil, err
	}
	s.version = s.hash()
	return s, nil
}

// Lookup returns the relation with exactly this schema and name.
func (s *Snapshot) Lookup(schema, name string) (*Relation, bool) {
	r, ok := s.relations[relKey{schema, name}]
	return r, ok
}

// LookupQualified returns the relation whose QualifiedName is qualified.
func (s *Snapshot) LookupQualified(qualified string) (*Relation, bool) {
	r, ok := s.byQualified[qualified]
	return r, ok
}

// Resolve finds an unqualified relation name the way PostgreSQL does: through
// pg_catalog (unless searchPath lists it explicitly) and then searchPath in
// order, with "$user" standing for role. Temporary schemas are not part of a
// snapshot and are never searched.
func (s *Snapshot) Resolve(searchPath []string, role, name string) (*Relation, bool) {
	if !slices.Contains(searchPath, "pg_catalog") {
		if r, ok := s.Lookup("pg_catalog", name); ok {
			return r, true
		}
	}
	for _, schema := range searchPath {
		if schema == "$user" {
			if role == "" {
				continue
			}
			schema = role
		}
		if r, ok := s.Lookup(schema, name); ok {
			return r, true
		}
	}
	return nil, false
}

// SensitiveOrigin reports whether column of the relation named by qualified
// (in QualifiedName form) is sensitive, and if so the configured table it is
// sensitive as: the relation itself when configured, else its nearest
// partitioned or inheritance ancestor configured with a column of that name.
// Reading a partition reads its parent's sensitive data; reporting it under
// the parent's name lets alerts group on the table the operator configured.
func (s *Snapshot) SensitiveOrigin(qualified, column string) (string, bool) {
	if s.sensitive[qualified][column] {
		return qualified, true
	}
	origin, ok := s.origins[qualified][column]
	return origin, ok
}

// inheritSensitivity finds, for every relation with parents, the columns it
// inherits from configured sensitive ancestors, nearest ancestor first.
func (s *Snapshot) inheritSensitivity() map[string]map[string]string {
	out := make(map[string]map[string]string)
	for _, r := range s.relations {
		if len(r.Inherits) == 0 {
			continue
		}
		q := r.QualifiedName()
		seen := map[string]bool{q: true}
		level := r.Inherits
		for len(level) > 0 {
			var next []string
			for _, p := range level {
				if seen[p] {
					continue
				}
				seen[p] = true
				for _, col := range s.sensitiveList[p] {
					if !r.HasColumn(col) || s.sensitive[q][col] {
						continue
					}
					if _, done := out[q][col]; done {
						continue
					}
					if out[q] == nil {
						out[q] = make(map[string]string)
					}
					out[q][col] = p
				}
				if pr, ok := s.byQualified[p]; ok {
					next = append(next, pr.Inherits...)
				}
			}
			level = next
		}
	}
	return out
}

// Relations returns every relation, sorted by qualified name.
func (s *Snapshot) Relations() []*Relation {
	out := make([]*Relation, 0, len(s.relations))
	for _, r := range s.relations {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].QualifiedName() < out[j].QualifiedName() })
	return out
}

// ViewSearchPath returns the search path under which view definitions resolve
// (see WithViewSearchPath).
func (s *Snapshot) ViewSearchPath() []string { return slices.Clone(s.viewSearchPath) }

// SensitiveColumns returns the sorted sensitive columns configured for the
// table named by qualified (in QualifiedName form), nil if there are none. The
// slice is shared and must not be modified.
func (s *Snapshot) SensitiveColumns(qualified string) []string {
	return s.sensitiveList[qualified]
}

// IsSensitive reports whether column of the table named by qualified (in
// QualifiedName form) is configured as sensitive.
func (s *Snapshot) IsSensitive(qualified, column string) bool {
	return s.sensitive[qualified][column]
}

// HasSensitive reports whether any column of the relation named by qualified is
// configured as sensitive.
func (s *Snapshot) HasSensitive(qualified string) bool {
	return len(s.sensitive[qualified]) > 0
}

// SensitiveRelationsNamed returns the relations of the snapshot called exactly
// name, in any schema, that have sensitive columns configured (HasSensitive),
// sorted by qualified name; nil if there are none. An unqualified name in SQL
// can reach any of them under a session's own search_path. The slice is shared
// and must not be modified.
func (s *Snapshot) SensitiveRelationsNamed(name string) []*Relation {
	return s.sensitiveNamed[name]
}

// RelationsNamed returns the relations of the snapshot called exactly name, in
// any schema, sorted by qualified name; nil if there are none. The slice is
// shared and must not be modified.
func (s *Snapshot) RelationsNamed(name string) []*Relation {
	return s.named[name]
}

// HasSensitiveColumns reports whether any column of the relation named by
// qualified is sensitive, configured on it or inherited from a configured
// ancestor (see SensitiveOrigin): reading the relation can read sensitive
// values.
func (s *Snapshot) HasSensitiveColumns(qualified string) bool {
	return len(s.sensitive[qualified]) > 0 || len(s.origins[qualified]) > 0
}

// Sensitive returns a copy of the sensitive-column configuration, keyed by
// qualified table name, columns sorted.
func (s *Snapshot) Sensitive() map[string][]string {
	out := make(map[string][]string, len(s.sensitiveList))
	for q, cols := range s.sensitiveList {
		out[q] = slices.Clone(cols)
	}
	return out
}

// Missing returns the configured sensitive tables ("schema.table") and columns
// ("schema.table.column") that do not exist in the snapshot, sorted. They
// deserve a warning, not an error: the table may be created later.
func (s *Snapshot) Missing() []string { return slices.Clone(s.missing) }

// Version returns a hash of the snapshot's content (relations, columns, view
// definitions, unique keys, functions, view search path and sensitive
// configuration). Two snapshots
// with the same content have the same version, so a refresh that changed
// nothing can be recognised and cached classifications kept.
func (s *Snapshot) Version() string { return s.version }

func (s *Snapshot) hash() string {
	h := sha256.New()
	var n [8]byte
	writeString := func(v string) {
		binary.BigEndian.PutUint64(n[:], uint64(len(v)))
		h.Write(n[:])
		h.Write([]byte(v))
	}
	writeStrings := func(vs []string) {
		binary.BigEndian.PutUint64(n[:], uint64(len(vs)))
		h.Write(n[:])
		for _, v := range vs {
			writeString(v)
		}
	}
	for _, r := range s.Relations() {
		writeString(r.Schema)
		writeString(r.Name)
		writeString(string([]byte{byte(r.Kind)}))
		writeStrings(r.Columns)
		writeString(r.ViewDef)
		writeStrings(r.Inherits)
		binary.BigEndian.PutUint64(n[:], uint64(len(r.UniqueKeys)))
		h.Write(n[:])
		for _, k := range r.UniqueKeys {
			writeString(k.Name)
			writeString(fmt.Sprint(k.Primary))
			binary.BigEndian.PutUint64(n[:], uint64(len(k.Parts)))
			h.Write(n[:])
			for _, p := range k.Parts {
				writeString(p.Column)
				writeString(p.Expression)
			}
		}
	}
	writeString("\x00functions")
	for _, f := range s.functionsList {
		writeString(f.Schema)
		writeString(f.Name)
		writeString(f.Language)
		writeStrings(f.Args)
		writeStrings(f.ArgTypes)
		writeString(fmt.Sprint(f.NumDefaults, f.Variadic, f.ReturnsSet, f.SecurityDefiner))
		writeString(f.Body)
		writeString(f.SQLBody)
		writeString(f.ReturnType)
		writeStrings(f.ResultColumns)
		writeStrings(f.SearchPath)
	}
	writeString("\x00sensitive")
	tables := make([]string, 0, len(s.sensitiveList))
	for q := range s.sensitiveList {
		tables = append(tables, q)
	}
	sort.Strings(tables)
	for _, q := range tables {
		writeString(q)
		writeStrings(s.sensitiveList[q])
	}
	writeString("\x00viewpath")
	writeStrings(s.viewSearchPath)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// String summarises the snapshot for logs; it never includes view text.
func (s *Snapshot) String() string {
	return fmt.Sprintf("catalog %s: %d relations, %d functions, %d sensitive tables", s.version, len(s.relations), len(s.functionsList), len(s.sensitive))
}
