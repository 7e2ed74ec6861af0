package rulefmt

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"go.yaml.in/yaml/v3"

	"github.com/pgtripwire/pgtripwire/model"
)

// eventTypeName is the CEL type of the event variable.
const eventTypeName = "pgtripwire.Event"

// costLimit bounds the work of one evaluation of a match expression. A
// typical rule costs under 20; comprehensions over the (short) column lists
// stay well under the limit, a runaway expression fails instead of stalling
// the pipeline.
const costLimit = 10_000

// fieldByName holds the event fields rules can name (model's field table),
// for the checks of field names in rule files.
var fieldByName = func() map[string]model.EventField {
	m := map[string]model.EventField{}
	for _, f := range model.EventFields() {
		m[f.Name] = f
	}
	return m
}()

// EventFields lists the names of the event's fields as rules see them.
func EventFields() []string {
	var names []string
	for _, f := range model.EventFields() {
		names = append(names, f.Name)
	}
	return names
}

func fieldsWithUse(u model.FieldUse) []string {
	var names []string
	for _, f := range model.EventFields() {
		if f.Use == u {
			names = append(names, f.Name)
		}
	}
	return names
}

// labelFields may group (by, first_seen key, count_distinct); numericFields
// may be summed, maximised or compared with a threshold.
func labelFields() []string   { return fieldsWithUse(model.UseGroup) }
func numericFields() []string { return fieldsWithUse(model.UseValue) }

// celField is how CEL sees a field of the table: its type and its value;
// false for a field type CEL is not told about here.
func celField(f model.EventField) (*types.Type, func(*model.Event) ref.Val, bool) {
	switch f.Type {
	case model.FieldString:
		return types.StringType, func(e *model.Event) ref.Val { return types.String(f.String(e)) }, true
	case model.FieldInt:
		return types.IntType, func(e *model.Event) ref.Val { return types.Int(f.Int(e)) }, true
	case model.FieldBool:
		return types.BoolType, func(e *model.Event) ref.Val { return types.Bool(f.Bool(e)) }, true
	case model.FieldList:
		return types.NewListType(types.StringType), func(e *model.Event) ref.Val {
			return types.NewStringList(types.DefaultTypeAdapter, f.List(e))
		}, true
	case model.FieldTime:
		return types.TimestampType, func(e *model.Event) ref.Val { return types.Timestamp{Time: f.Time(e)} }, true
	}
	return nil, nil, false
}

// eventProvider adds the event type to CEL's registry, reading fields
// straight from *model.Event: no conversion of the event to a map or a
// protobuf message per evaluation.
type eventProvider struct {
	*types.Registry
	fieldTypes map[string]*types.FieldType
}

func newEventProvider() (*eventProvider, error) {
	reg, err := types.NewRegistry()
	if err != nil {
		return nil, err
	}
	p := &eventProvider{Registry: reg, fieldTypes: make(map[string]*types.FieldType, len(fieldByName))}
	for name, f := range fieldByName {
		typ, get, ok := celField(f)
		if !ok {
			return nil, fmt.Errorf("event field %s: no CEL type for field type %d", name, f.Type)
		}
		p.fieldTypes[name] = &types.FieldType{
			Type: typ,
			IsSet: func(obj any) bool {
				ev, ok := obj.(*model.Event)
				return ok && f.Known(ev)
			},
			GetFrom: func(obj any) (any, error) {
				ev, ok := obj.(*model.Event)
				if !ok {
					return nil, fmt.Errorf("event.%s: got %T, want *model.Event", name, obj)
				}
				return get(ev), nil
			},
		}
	}
	return p, nil
}

func (p *eventProvider) FindStructType(name string) (*types.Type, bool) {
	if name == eventTypeName {
		return types.NewTypeTypeWithParam(types.NewObjectType(eventTypeName)), true
	}
	return p.Registry.FindStructType(name)
}

func (p *eventProvider) FindStructFieldNames(name string) ([]string, bool) {
	if name == eventTypeName {
		return EventFields(), true
	}
	return p.Registry.FindStructFieldNames(name)
}

func (p *eventProvider) FindStructFieldType(name, field string) (*types.FieldType, bool) {
	if name == eventTypeName {
		ft, ok := p.fieldTypes[field]
		return ft, ok
	}
	return p.Registry.FindStructFieldType(name, field)
}

// env is the CEL environment of match expressions, built once: cel.Env is
// safe for concurrent use.
var env = sync.OnceValues(func() (*cel.Env, error) {
	p, err := newEventProvider()
	if err != nil {
		return nil, err
	}
	return cel.NewEnv(
		cel.CustomTypeProvider(p),
		cel.Variable("event", cel.ObjectType(eventTypeName)),
	)
})

// compileMatch type-checks and plans a match expression, reporting its
// problems at their place in the file.
func (d *decoder) compileMatch(where string, n *yaml.Node, src string) (*compiledMatch, bool) {
	e, err := env()
	if err != nil {
		d.errorNode(n, "%s.match: build CEL environment: %v", where, err)
		return nil, false
	}
	ast, iss := e.Compile(src)
	if iss.Err() != nil {
		for _, ce := range iss.Errors() {
			line, col := d.exprPos(n, src, ce.Location.Line(), ce.Location.Column())
			d.errorAt(line, col, "%s.match: %s", where, ce.Message)
		}
		return nil, false
	}
	if !ast.OutputType().IsExactType(types.BoolType) {
		d.errorNode(n, "%s.match: the expression is of type %s; it must be a bool (true when the event matches)", where, ast.OutputType())
		return nil, false
	}
	prg, err := e.Program(ast, cel.CostLimit(costLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		d.errorNode(n, "%s.match: %v", where, err)
		return nil, false
	}
	native := ast.NativeRep()
	return &compiledMatch{
		program: prg,
		native:  compileNative(native),
		sources: staticSources(native.Expr()),
	}, true
}

// compiledMatch is a match expression ready to run: the CEL program, and
// the native matcher when the expression is in its subset.
type compiledMatch struct {
	program cel.Program
	native  boolFn         // nil: evaluate with program
	sources []model.Source // nil: any source
}

// exprPos maps a position inside a CEL expression (1-based line, 0-based
// column in characters, as CEL reports it) to a position in the file.
//
//   - A single-line plain or quoted scalar: the scalar's column plus the
//     offset (plus the opening quote, plus one for each ” or \ escape
//     before it in the source). Exact.
//   - A literal block scalar (|): the expression's line n is the n-th line
//     after the indicator, its columns shifted by the block's indentation.
//     Exact.
//   - A folded block scalar (>) or a multi-line flow scalar: the text is
//     located by walking the source lines; folding turns line breaks into
//     spaces (same length), but an empty line or a more-indented one changes
//     the count, so the position may be a line off after one. The error
//     still names the right scalar.
func (d *decoder) exprPos(n *yaml.Node, src string, line, col int) (int, int) {
	if line < 1 {
		return n.Line, n.Column
	}
	// offset of the error in the decoded expression, in runes
	srcLines := strings.Split(src, "\n")
	off := 0
	for i := 0; i < line-1 && i < len(srcLines); i++ {
		off += utf8.RuneCountInString(srcLines[i]) + 1
	}
	off += col
	if d.lines == nil {
		d.lines = sourceLines(d.data)
	}
	lineText := func(l int) []rune {
		if l-1 < len(d.lines) && l >= 1 {
			return []rune(d.lines[l-1])
		}
		return nil
	}
	switch n.Style {
	case yaml.LiteralStyle, yaml.FoldedStyle:
		// Content starts on the line after the indicator; the block's
		// indentation is that of its first non-empty line.
		indent := -1
		for l := n.Line + 1; l <= len(d.lines); l++ {
			t := lineText(l)
			if strings.TrimSpace(string(t)) == "" {
				continue
			}
			indent = len(t) - len(strings.TrimLeft(string(t), " "))
			break
		}
		if indent < 0 {
			return n.Line, n.Column
		}
		rest := off
		for l := n.Line + 1; l <= len(d.lines); l++ {
			t := lineText(l)
			content := 0
			if len(t) > indent {
				content = len(t) - indent
			}
			if rest <= content {
				return l, indent + rest + 1
			}
			rest -= content + 1
		}
		return n.Line, n.Column
	}
	// Flow scalars: plain, 'single' or "double" quoted.
	quoted := n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) != 0
	t := lineText(n.Line)
	start := n.Column - 1
	if quoted {
		start++
	}
	if start > len(t) {
		return n.Line, n.Column
	}
	l, seg := n.Line, t[start:]
	for {
		// Walk the segment, skipping the extra characters of escapes.
		i, consumed := 0, 0
		for i < len(seg) {
			if consumed == off {
				return l, start + i + 1
			}
			switch {
			case n.Style&yaml.SingleQuotedStyle != 0 && seg[i] == '\'' && i+1 < len(seg) && seg[i+1] == '\'':
				i += 2
			case n.Style&yaml.DoubleQuotedStyle != 0 && seg[i] == '\\' && i+1 < len(seg):
				i += escapeLen(seg[i+1:]) + 1
			default:
				i++
			}
			consumed++
		}
		if consumed == off || l >= len(d.lines) {
			return l, start + i + 1
		}
		// The scalar goes on: the break folds into one space.
		off -= consumed + 1
		l++
		t = lineText(l)
		trimmed := strings.TrimLeft(string(t), " \t")
		start = len(t) - utf8.RuneCountInString(trimmed)
		seg = []rune(trimmed)
		if off < 0 {
			return l, start + 1
		}
	}
}

// escapeLen is the length, after the backslash, of a double-quoted escape.
func escapeLen(r []rune) int {
	switch r[0] {
	case 'x':
		return min(3, len(r))
	case 'u':
		return min(5, len(r))
	case 'U':
		return min(9, len(r))
	}
	return 1
}

// activation resolves the one variable of a match expression.
type activation struct{ ev *model.Event }

func (a *activation) ResolveName(name string) (any, bool) {
	if name == "event" {
		return a.ev, true
	}
	return nil, false
}

func (*activation) Parent() cel.Activation { return nil }

var activations = sync.Pool{New: func() any { return new(activation) }}

// Match reports whether ev matches the rule's CEL expression. It fails when
// the evaluation does: a runtime error (an index out of range) or the cost
// limit exceeded. Match is safe for concurrent use.
func (r *Rule) Match(ev model.Event) (bool, error) {
	return r.MatchEvent(&ev)
}

// MatchEvent is Match without copying the event. It does not allocate when
// the expression is in the native subset (NativeMatch); ev is not retained.
func (r *Rule) MatchEvent(ev *model.Event) (bool, error) {
	if r.match == nil {
		return false, fmt.Errorf("rule %s: match is not compiled", r.Name)
	}
	if r.match.native != nil {
		return r.match.native(ev), nil
	}
	return r.matchCEL(ev)
}

// NativeMatch reports whether the match expression runs as compiled Go
// rather than in the CEL interpreter (the same result, without allocation).
func (r *Rule) NativeMatch() bool { return r.match != nil && r.match.native != nil }

// Sources returns the event sources the match expression can be true for,
// read from its top-level conjuncts (event.source == "wal",
// event.source in ["statements", "activity"]); nil when it does not pin the
// source. An evaluator may skip the rule for events of other sources.
func (r *Rule) Sources() []model.Source {
	if r.match == nil {
		return nil
	}
	return r.match.sources
}

// matchCEL evaluates the match with the CEL interpreter.
func (r *Rule) matchCEL(ev *model.Event) (bool, error) {
	a := activations.Get().(*activation)
	a.ev = ev
	out, _, err := r.match.program.Eval(a)
	a.ev = nil
	activations.Put(a)
	if err != nil {
		return false, fmt.Errorf("rule %s: evaluate match: %w", r.Name, err)
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("rule %s: match returned %s, want bool", r.Name, out.Type())
	}
	return bool(b), nil
}
