package rulefmt

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"text/template"

	"github.com/pgtripwire/pgtripwire/model"
	"go.yaml.in/yaml/v3"
)

// TemplateData is what label and annotation templates see: the alert's
// labels (from the rule's group-by fields and its labels) and its value.
type TemplateData struct {
	Labels map[string]string
	Value  float64
}

// templates decodes a mapping of label or annotation names to templates,
// parsing each and trying it on empty data so that a misspelt field
// (.Lables) is caught at load, not when the alert fires.
func (d *decoder) templates(where string, n *yaml.Node, labels bool) (map[string]string, map[string]*template.Template) {
	n = resolveAlias(n)
	if !d.count(n) {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		d.errorNode(n, "%s: want a mapping of names to text, got %s", where, describe(n))
		return nil, nil
	}
	texts := map[string]string{}
	tmpls := map[string]*template.Template{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolveAlias(n.Content[i]), resolveAlias(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
			d.errorNode(k, "%s: keys must be names, got %s", where, describe(k))
			continue
		}
		if _, dup := texts[k.Value]; dup {
			d.errorNode(k, "%s: duplicate key %s", where, quote(k.Value))
			continue
		}
		if !labelName.MatchString(k.Value) {
			d.errorNode(k, "%s: %s is not a valid name ([a-zA-Z_][a-zA-Z0-9_]*)", where, quote(k.Value))
			continue
		}
		w := where + "." + k.Value
		s, ok := d.scalar(v, w)
		if !ok {
			continue
		}
		texts[k.Value] = s
		t, err := template.New(k.Value).Option("missingkey=zero").Funcs(templateFuncs).Parse(s)
		if err == nil {
			err = t.Execute(discard{}, TemplateData{Labels: map[string]string{}})
		}
		if err != nil {
			line, col := d.templatePos(v, err)
			d.errorAt(line, col, "%s: %s", w, templateMessage(err))
			continue
		}
		tmpls[k.Value] = t
	}
	_ = labels // label and annotation names follow the same rules today
	return texts, tmpls
}

// templateFuncs are the functions templates may call besides text/template's own.
// Label values can be chosen by whoever is being detected (a role, a slot or a
// publication name), and annotations put them into SQL for the on-call engineer to
// paste: quoteLiteral and quoteIdent make such SQL safe to run as written.
var templateFuncs = template.FuncMap{
	// quoteLiteral quotes s as an SQL string literal, as PostgreSQL's quote_literal
	// does: 'it''s', and E'a\\b' for a backslash, which reads back the same whether
	// standard_conforming_strings is on or off.
	"quoteLiteral": quoteLiteral,
	// quoteIdent quotes s as an SQL identifier when it must be, as PostgreSQL's
	// quote_ident does: mallory, "Mallory", "x""; DROP TABLE users; --".
	"quoteIdent": model.QuoteIdent,
}

func quoteLiteral(s string) string {
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		return "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// templateErr matches text/template's "template: NAME:LINE: msg" and
// "template: NAME:LINE:COL: executing ..." forms.
var templateErr = regexp.MustCompile(`^template: [^:]*:(\d+)(?::(\d+))?: (.*)$`)

// templatePos places a template error: on the scalar's line plus the
// template's line, at the scalar's column for its first line (text/template
// gives no column for parse errors).
func (d *decoder) templatePos(n *yaml.Node, err error) (int, int) {
	m := templateErr.FindStringSubmatch(err.Error())
	if m == nil {
		return n.Line, n.Column
	}
	tl, _ := strconv.Atoi(m[1])
	switch {
	case n.Style == yaml.LiteralStyle || n.Style == yaml.FoldedStyle:
		return n.Line + tl, 0
	case tl <= 1:
		return n.Line, n.Column
	default:
		return n.Line + tl - 1, 0
	}
}

func templateMessage(err error) string {
	if m := templateErr.FindStringSubmatch(err.Error()); m != nil {
		return "template: " + strings.TrimPrefix(m[3], "executing \""+"\" at ")
	}
	return fmt.Sprintf("template: %v", err)
}

// Expand executes the rule's label and annotation templates on data. The
// rule's own labels are expanded first, so annotations may use them.
func (r *Rule) Expand(data TemplateData) (labels, annotations map[string]string, err error) {
	labels = make(map[string]string, len(data.Labels)+len(r.labels))
	for k, v := range data.Labels {
		labels[k] = v
	}
	exec := func(t *template.Template, d TemplateData) (string, error) {
		var b strings.Builder
		if err := t.Execute(&b, d); err != nil {
			return "", fmt.Errorf("rule %s: expand %s: %w", r.Name, t.Name(), err)
		}
		return b.String(), nil
	}
	for k, t := range r.labels {
		if labels[k], err = exec(t, data); err != nil {
			return nil, nil, err
		}
	}
	annotations = make(map[string]string, len(r.annotations))
	for k, t := range r.annotations {
		if annotations[k], err = exec(t, TemplateData{Labels: labels, Value: data.Value}); err != nil {
			return nil, nil, err
		}
	}
	return labels, annotations, nil
}
