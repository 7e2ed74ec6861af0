package discover

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"github.com/pgtripwire/pgtripwire/model"
)

// Write prints the report as YAML an operator can paste into pgtripwire's
// configuration: a `sensitive:` block of the listed columns, then comments
// with each column's evidence, the weak or unrecognised password hashing,
// the columns worth a look that are not listed, and the tables that could not
// be sampled. Names from the database are quoted wherever they could break
// the YAML or a comment line; no sampled value is printed.
func (r *Report) Write(w io.Writer) error {
	b := bufio.NewWriter(w)
	sampling := fmt.Sprintf("up to %d sampled rows per table", r.SampleRows)
	if r.SampleRows == 0 {
		sampling = "names and types only, no rows sampled"
	}
	fmt.Fprintf(b, "# pgtripwire discover: database %s, %s.\n", commentSafe(r.Database), sampling)
	tables := r.Tables()
	if len(tables) == 0 {
		fmt.Fprintln(b, "# No candidate credential columns found. pgtripwire's sensitive: list must name")
		fmt.Fprintln(b, "# at least one table: write it by hand.")
	} else {
		fmt.Fprintln(b, "# Candidate credential columns: review them, then paste this block into the")
		fmt.Fprintln(b, "# configuration file. No sampled value is printed.")
		fmt.Fprintln(b, "sensitive:")
		for _, t := range tables {
			cols := make([]string, len(t.Columns))
			for i, c := range t.Columns {
				cols[i] = yamlScalar(model.QuoteIdent(c))
			}
			fmt.Fprintf(b, "  - table: %s\n    columns: [%s]\n", yamlScalar(t.Table), strings.Join(cols, ", "))
		}
	}

	section := func(title string, lines []string) {
		if len(lines) == 0 {
			return
		}
		fmt.Fprintf(b, "#\n# %s\n", title)
		for _, l := range lines {
			fmt.Fprintf(b, "#   %s\n", l)
		}
	}
	var evidence, weak, consider []string
	for i := range r.Columns {
		c := &r.Columns[i]
		line := fmt.Sprintf("%s (%s): %s", columnName(c), commentSafe(c.Type), describe(c, r.SampleRows))
		if c.Listed {
			evidence = append(evidence, line)
		} else {
			consider = append(consider, line+"; "+whyNotListed(c))
		}
		for _, why := range c.Weak {
			weak = append(weak, fmt.Sprintf("%s: WEAK: %s", columnName(c), why))
		}
		if c.Unrecognised > 0 {
			weak = append(weak, fmt.Sprintf("%s: CHECK: %d of %d sampled values are in no known password-hash format "+
				"(plaintext? reversible encryption? a scheme discover does not know?)", columnName(c), c.Unrecognised, c.Sampled))
		}
	}
	section("Evidence:", evidence)
	section("Weak or unrecognised password hashing:", weak)
	section("Also worth a look (not in the block above):", consider)
	var unsampled []string
	for _, u := range r.Unsampled {
		unsampled = append(unsampled, fmt.Sprintf("%s: %s", commentSafe(u.Table), u.Reason))
	}
	section("Not sampled (judged by column names only):", unsampled)
	return b.Flush()
}

func columnName(c *Column) string {
	return commentSafe(c.Qualified() + "." + model.QuoteIdent(c.Name))
}

// describe puts a column's evidence in words: what its name suggests and
// what its sampled values look like, as counts and scheme names.
func describe(c *Column, sampleRows int) string {
	var parts []string
	if c.NameKind != KindNone {
		parts = append(parts, "name suggests "+kindPhrase[c.NameKind])
	}
	switch {
	case sampleRows == 0, !c.examined:
	case c.Sampled == 0:
		parts = append(parts, "no values to sample (empty, or all NULL)")
	default:
		var shapes []string
		if c.Emails > 0 {
			shapes = append(shapes, fmt.Sprintf("%d email addresses", c.Emails))
		}
		for _, h := range c.Hashes {
			shapes = append(shapes, fmt.Sprintf("%d %s%s", h.Count, h.Scheme, costText(h)))
		}
		if c.Unrecognised > 0 {
			shapes = append(shapes, fmt.Sprintf("%d in no known hash format", c.Unrecognised))
		}
		if len(shapes) == 0 {
			shapes = append(shapes, "no known shape")
		}
		parts = append(parts, fmt.Sprintf("%s: %s", plural(c.Sampled, "sampled value"), strings.Join(shapes, ", ")))
	}
	return strings.Join(parts, "; ")
}

func costText(h HashCount) string {
	unit := ""
	switch {
	case h.Scheme == SchemeBcrypt:
		unit = "cost"
	case strings.HasPrefix(h.Scheme, "pbkdf2-"):
		unit = "iterations"
	default:
		return ""
	}
	if h.MinCost == h.MaxCost {
		return fmt.Sprintf(" (%s %d)", unit, h.MinCost)
	}
	return fmt.Sprintf(" (%s %d-%d)", unit, h.MinCost, h.MaxCost)
}

func whyNotListed(c *Column) string {
	if c.NameKind == KindPhone {
		return "personal data, not a credential"
	}
	return "the name does not suggest a credential (a checksum? an id?); if these are password hashes, " +
		"add the column and treat them as weak: bare digests carry no salt"
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

var kindPhrase = map[Kind]string{
	KindEmail:    "an email address",
	KindUsername: "a user name",
	KindPassword: "a password",
	KindSecret:   "a secret or token",
	KindSSN:      "a social security number",
	KindPhone:    "a phone number",
}

// plainYAML are scalars that YAML reads back as the same string without
// quotes. Names outside it are written as JSON strings, which YAML reads as
// double-quoted scalars.
var plainYAML = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.$]*$`)

func yamlScalar(s string) string {
	switch strings.ToLower(s) {
	case "true", "false", "null", "yes", "no", "on", "off", "y", "n":
	default:
		if plainYAML.MatchString(s) {
			return s
		}
	}
	q, _ := json.Marshal(s) // a string always marshals
	return string(q)
}

// commentSafe keeps a name from the database on one comment line: a name
// with a line break or other control character is shown Go-quoted.
func commentSafe(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) }) >= 0 {
		return strconv.QuoteToGraphic(s)
	}
	return s
}
