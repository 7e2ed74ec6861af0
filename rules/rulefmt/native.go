package rulefmt

// A native matcher is a Go closure compiled from the checked CEL AST of a
// match expression, for the subset of CEL that rules mostly use: field
// selection, has(), string/int/bool literals, comparisons, &&, ||, !,
// size() of a list, `x in list`, the string methods startsWith,
// endsWith and contains, and matches with a literal pattern. It gives the same result as the CEL program (the
// tests compare both on many events) without the interpreter's
// allocations: ~10 ns instead of ~600 ns per rule. Every expression of this
// subset is total (no errors, bounded cost), so CEL's error semantics of
// && and || need no emulation. Anything else (comprehensions, arithmetic,
// ternaries, doubles, timestamps) falls back to the CEL program.

import (
	"cmp"
	"regexp"
	"strings"

	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"

	"github.com/pgtripwire/pgtripwire/model"
)

type (
	boolFn func(*model.Event) bool
	strFn  func(*model.Event) string
	intFn  func(*model.Event) int64
)

// typedField returns the accessor of event.<field> from model's field table
// when e selects a field of type t. A field of another type (time) makes the
// expression fall back to CEL.
func typedField(e celast.Expr, t model.FieldType) (model.EventField, bool) {
	f, ok := fieldByName[selectedField(e)]
	return f, ok && f.Type == t
}

// compileNative returns the native matcher of a checked expression, or nil
// when the expression is outside the supported subset.
func compileNative(a *celast.AST) boolFn {
	f, _ := nativeBool(a.Expr())
	return f
}

func isEvent(e celast.Expr) bool {
	return e.Kind() == celast.IdentKind && e.AsIdent() == "event"
}

// selectedField returns the name of event.<field>, or "".
func selectedField(e celast.Expr) string {
	if e.Kind() != celast.SelectKind {
		return ""
	}
	s := e.AsSelect()
	if s.IsTestOnly() || !isEvent(s.Operand()) {
		return ""
	}
	return s.FieldName()
}

func nativeBool(e celast.Expr) (boolFn, bool) {
	switch e.Kind() {
	case celast.LiteralKind:
		if b, ok := e.AsLiteral().(types.Bool); ok {
			v := bool(b)
			return func(*model.Event) bool { return v }, true
		}
		return nil, false
	case celast.SelectKind:
		s := e.AsSelect()
		if !isEvent(s.Operand()) {
			return nil, false
		}
		if s.IsTestOnly() { // has(event.x)
			f, ok := fieldByName[s.FieldName()]
			if !ok {
				return nil, false
			}
			return f.Known, true
		}
		if f, ok := typedField(e, model.FieldBool); ok {
			return f.Bool, true
		}
		return nil, false
	case celast.CallKind:
	default:
		return nil, false
	}
	c := e.AsCall()
	args := c.Args()
	switch c.FunctionName() {
	case operators.LogicalAnd, operators.LogicalOr:
		// Variadic after optimisation: a && b && c may be one call.
		fs := make([]boolFn, 0, len(args))
		for _, a := range args {
			f, ok := nativeBool(a)
			if !ok {
				return nil, false
			}
			fs = append(fs, f)
		}
		if len(fs) != 2 {
			return nil, false
		}
		l, r := fs[0], fs[1]
		if c.FunctionName() == operators.LogicalAnd {
			return func(ev *model.Event) bool { return l(ev) && r(ev) }, true
		}
		return func(ev *model.Event) bool { return l(ev) || r(ev) }, true
	case operators.LogicalNot:
		if len(args) != 1 {
			return nil, false
		}
		f, ok := nativeBool(args[0])
		if !ok {
			return nil, false
		}
		return func(ev *model.Event) bool { return !f(ev) }, true
	case operators.Equals, operators.NotEquals, operators.Less, operators.LessEquals,
		operators.Greater, operators.GreaterEquals:
		if len(args) != 2 {
			return nil, false
		}
		return nativeCompare(c.FunctionName(), args[0], args[1])
	case operators.In:
		if len(args) != 2 {
			return nil, false
		}
		return nativeIn(args[0], args[1])
	case "matches":
		// s.matches(re) or matches(s, re) with a literal pattern, compiled
		// once; CEL's matches is Go's RE2 regexp, so the results agree.
		var target, pattern celast.Expr
		switch {
		case c.IsMemberFunction() && len(args) == 1:
			target, pattern = c.Target(), args[0]
		case !c.IsMemberFunction() && len(args) == 2:
			target, pattern = args[0], args[1]
		default:
			return nil, false
		}
		t, ok := nativeStr(target)
		if !ok || pattern.Kind() != celast.LiteralKind {
			return nil, false
		}
		p, ok := pattern.AsLiteral().(types.String)
		if !ok {
			return nil, false
		}
		re, err := regexp.Compile(string(p))
		if err != nil {
			return nil, false // CEL reports the error at evaluation
		}
		return func(ev *model.Event) bool { return re.MatchString(t(ev)) }, true
	case "startsWith", "endsWith", "contains":
		if !c.IsMemberFunction() || len(args) != 1 {
			return nil, false
		}
		t, ok := nativeStr(c.Target())
		if !ok {
			return nil, false
		}
		a, ok := nativeStr(args[0])
		if !ok {
			return nil, false
		}
		switch c.FunctionName() {
		case "startsWith":
			return func(ev *model.Event) bool { return strings.HasPrefix(t(ev), a(ev)) }, true
		case "endsWith":
			return func(ev *model.Event) bool { return strings.HasSuffix(t(ev), a(ev)) }, true
		default:
			return func(ev *model.Event) bool { return strings.Contains(t(ev), a(ev)) }, true
		}
	}
	return nil, false
}

func nativeStr(e celast.Expr) (strFn, bool) {
	if e.Kind() == celast.LiteralKind {
		if s, ok := e.AsLiteral().(types.String); ok {
			v := string(s)
			return func(*model.Event) string { return v }, true
		}
		return nil, false
	}
	f, ok := typedField(e, model.FieldString)
	return f.String, ok
}

func nativeInt(e celast.Expr) (intFn, bool) {
	switch e.Kind() {
	case celast.LiteralKind:
		if n, ok := e.AsLiteral().(types.Int); ok {
			v := int64(n)
			return func(*model.Event) int64 { return v }, true
		}
		return nil, false
	case celast.CallKind:
		// size(list) or list.size()
		c := e.AsCall()
		if c.FunctionName() != "size" {
			return nil, false
		}
		var arg celast.Expr
		switch {
		case c.IsMemberFunction() && len(c.Args()) == 0:
			arg = c.Target()
		case !c.IsMemberFunction() && len(c.Args()) == 1:
			arg = c.Args()[0]
		default:
			return nil, false
		}
		l, ok := typedField(arg, model.FieldList)
		if !ok {
			return nil, false
		}
		list := l.List
		return func(ev *model.Event) int64 { return int64(len(list(ev))) }, true
	}
	f, ok := typedField(e, model.FieldInt)
	return f.Int, ok
}

// compareFn is the comparison op (one of CEL's six relational operators) of l and r.
func compareFn[T cmp.Ordered](op string, l, r func(*model.Event) T) boolFn {
	switch op {
	case operators.Equals:
		return func(ev *model.Event) bool { return l(ev) == r(ev) }
	case operators.NotEquals:
		return func(ev *model.Event) bool { return l(ev) != r(ev) }
	case operators.Less:
		return func(ev *model.Event) bool { return l(ev) < r(ev) }
	case operators.LessEquals:
		return func(ev *model.Event) bool { return l(ev) <= r(ev) }
	case operators.Greater:
		return func(ev *model.Event) bool { return l(ev) > r(ev) }
	default:
		return func(ev *model.Event) bool { return l(ev) >= r(ev) }
	}
}

func nativeCompare(op string, a, b celast.Expr) (boolFn, bool) {
	if l, ok := nativeInt(a); ok {
		r, ok := nativeInt(b)
		if !ok {
			return nil, false
		}
		return compareFn(op, l, r), true
	}
	if l, ok := nativeStr(a); ok {
		r, ok := nativeStr(b)
		if !ok {
			return nil, false
		}
		return compareFn(op, l, r), true
	}
	if op != operators.Equals && op != operators.NotEquals {
		return nil, false
	}
	l, ok := nativeBool(a)
	if !ok {
		return nil, false
	}
	r, ok := nativeBool(b)
	if !ok {
		return nil, false
	}
	if op == operators.Equals {
		return func(ev *model.Event) bool { return l(ev) == r(ev) }, true
	}
	return func(ev *model.Event) bool { return l(ev) != r(ev) }, true
}

// nativeIn handles `x in event.list` and `event.x in ["a", "b"]`.
func nativeIn(elem, list celast.Expr) (boolFn, bool) {
	x, ok := nativeStr(elem)
	if !ok {
		return nil, false
	}
	if l, ok := typedField(list, model.FieldList); ok {
		get := l.List
		return func(ev *model.Event) bool {
			v := x(ev)
			for _, s := range get(ev) {
				if s == v {
					return true
				}
			}
			return false
		}, true
	}
	if list.Kind() != celast.ListKind || len(list.AsList().OptionalIndices()) > 0 {
		return nil, false
	}
	var set []string
	for _, el := range list.AsList().Elements() {
		if el.Kind() != celast.LiteralKind {
			return nil, false
		}
		s, ok := el.AsLiteral().(types.String)
		if !ok {
			return nil, false
		}
		set = append(set, string(s))
	}
	return func(ev *model.Event) bool {
		v := x(ev)
		for _, s := range set {
			if s == v {
				return true
			}
		}
		return false
	}, true
}

// staticSources returns the event sources an expression can match, from
// its top-level conjuncts `event.source == "x"` and `event.source in [...]`;
// nil when the expression does not pin the source.
func staticSources(e celast.Expr) []model.Source {
	if e.Kind() != celast.CallKind {
		return nil
	}
	c := e.AsCall()
	args := c.Args()
	switch c.FunctionName() {
	case operators.LogicalAnd:
		// The intersection of the conjuncts' sets; one is enough.
		var best []model.Source
		for _, a := range args {
			if s := staticSources(a); s != nil && (best == nil || len(s) < len(best)) {
				best = s
			}
		}
		return best
	case operators.Equals:
		if len(args) != 2 {
			return nil
		}
		for i := range 2 {
			if selectedField(args[i]) != "source" {
				continue
			}
			if lit := args[1-i]; lit.Kind() == celast.LiteralKind {
				if s, ok := lit.AsLiteral().(types.String); ok {
					return []model.Source{model.Source(s)}
				}
			}
		}
	case operators.In:
		if len(args) != 2 || selectedField(args[0]) != "source" || args[1].Kind() != celast.ListKind {
			return nil
		}
		var out []model.Source
		for _, el := range args[1].AsList().Elements() {
			if el.Kind() != celast.LiteralKind {
				return nil
			}
			s, ok := el.AsLiteral().(types.String)
			if !ok {
				return nil
			}
			out = append(out, model.Source(s))
		}
		if out == nil {
			return []model.Source{} // `in []`: matches nothing
		}
		return out
	}
	return nil
}
