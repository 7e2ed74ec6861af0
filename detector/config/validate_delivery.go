package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
	"unicode/utf8"
)

// The checks of alert delivery. No message quotes a password, token or
// secret: they name the key instead. URLs are quoted with quote, which hides
// their user info.

func (v *validator) delivery() {
	v.alertmanager()
	v.webhooks()
	if n := v.cfg.Alerts.Spool.MaxEntries; n < 1 {
		v.errorf("alerts.spool.max_entries", "%d is below the minimum of 1", n)
	}
}

func (v *validator) alertmanager() {
	const base = "alerts.alertmanager"
	am := &v.cfg.Alerts.Alertmanager
	type listed struct {
		index     int
		line, col int
	}
	seen := make(map[string]listed, len(am.URLs))
	for i, raw := range am.URLs {
		p := fmt.Sprintf("%s.urls[%d]", base, i)
		if v.failed[p] {
			continue
		}
		u, ok := v.httpURL(p, raw, "use "+base+".basic_auth")
		if !ok {
			continue
		}
		if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
			v.errorf(p, "cannot use %s: a base URL has no query or fragment; pgtripwire appends the API path (/api/v2/alerts) to it", quote(raw))
			continue
		}
		key := u.Scheme + "://" + strings.ToLower(u.Host) + strings.TrimRight(u.EscapedPath(), "/")
		if first, dup := seen[key]; dup {
			v.errorf(p, "%s is already listed in %s.urls[%d] (first at %d:%d); list each Alertmanager once",
				quote(raw), base, first.index, first.line, first.col)
			continue
		}
		line, col := v.position(p)
		seen[key] = listed{index: i, line: line, col: col}
	}
	v.atLeast(base+".resend_interval", am.ResendInterval, minResendInterval)
	if d := am.ResolvedResendFor; d < 0 {
		v.errorf(base+".resolved_resend_for", "%s is negative; 0 sends a resolved alert once", d)
	}
	v.positive(base+".timeout", am.Timeout)
	v.generatorURL(base+".generator_url", am.GeneratorURL)

	if ba := am.BasicAuth; ba != nil && !v.failed[base+".basic_auth"] {
		bp := base + ".basic_auth"
		switch {
		case !v.set(bp + ".username"):
			v.errorf(bp, "username is missing; add %q", "username: NAME")
		case ba.Username == "":
			v.errorf(bp+".username", "empty")
		}
		v.oneOf(bp, "password", &ba.Password, "password_file", &ba.PasswordFile, "the password")
	}
	v.conflict(base+".basic_auth", base+".bearer_token", "authenticate one way")
	v.conflict(base+".basic_auth", base+".bearer_token_file", "authenticate one way")
	v.conflict(base+".bearer_token", base+".bearer_token_file", "keep one")
	v.notEmptySecret(base+".bearer_token", am.BearerToken)
	v.pathToFile(base+".bearer_token_file", &am.BearerTokenFile, true)
	v.tls(base+".tls", &am.TLS)
}

// webhookName is what a webhook name may hold: it becomes a metric label
// value and a log field.
var webhookName = regexp.MustCompile(`^[a-zA-Z0-9_.:-]+$`)

func (v *validator) webhooks() {
	type named struct {
		index     int
		line, col int
	}
	seen := make(map[string]named, len(v.cfg.Alerts.Webhooks))
	for i := range v.cfg.Alerts.Webhooks {
		w, base := &v.cfg.Alerts.Webhooks[i], fmt.Sprintf("alerts.webhooks[%d]", i)
		if v.failed[base] {
			continue
		}
		namePath, urlPath := base+".name", base+".url"

		var u *url.URL
		switch {
		case v.failed[urlPath]:
		case !v.set(urlPath):
			v.errorf(base, "url is missing; add the URL that receives the alerts, e.g. %q", "url: https://hooks.example/pgtripwire")
		default:
			u, _ = v.httpURL(urlPath, w.URL, "webhooks authenticate with the signature (secret or secret_file)")
		}

		validName := false
		switch {
		case v.failed[namePath]:
		case v.set(namePath) && w.Name == "":
			v.errorf(namePath, "empty; remove the key to use the URL's host")
		case v.set(namePath) && !webhookName.MatchString(w.Name):
			v.errorf(namePath, "cannot use %s: use only letters, digits, '_', '.', ':' and '-' (it becomes a metric label value)", quote(w.Name))
		case v.set(namePath):
			validName = true
		case u != nil:
			w.Name = strings.NewReplacer("[", "", "]", "").Replace(u.Host)
			if webhookName.MatchString(w.Name) {
				validName = true
			} else {
				v.errorf(urlPath, "the host %s cannot be the webhook's name, which may hold only letters, digits, '_', '.', ':' and '-'; set %s", quote(u.Host), namePath)
			}
		}
		if validName {
			line, col := v.position(namePath) // the entry's, when the name is the URL's host
			if first, dup := seen[w.Name]; dup {
				how := ""
				if !v.set(namePath) {
					how = " (the URL's host)"
				}
				v.errorf(namePath, "%s%s is already the name of alerts.webhooks[%d] (at %d:%d); give each webhook its own name",
					quote(w.Name), how, first.index, first.line, first.col)
			} else {
				seen[w.Name] = named{index: i, line: line, col: col}
			}
		}

		v.oneOf(base, "secret", &w.Secret, "secret_file", &w.SecretFile, "the shared secret that signs the requests")
		v.positive(base+".timeout", w.Timeout)
		v.tls(base+".tls", &w.TLS)
	}
}

// httpURL checks an http or https URL with a host and no user info. userinfo
// says where credentials go instead.
func (v *validator) httpURL(path, raw, userinfo string) (*url.URL, bool) {
	if raw == "" {
		v.errorf(path, "empty; want an http or https URL")
		return nil, false
	}
	// Any '@' is taken for user info, before parsing: a password holding '/'
	// or '#' ends the authority early, and url.Parse's error would then quote
	// part of it.
	if i := strings.IndexByte(raw, '@'); i >= 0 {
		if _, rest, ok := strings.Cut(raw[:i], "://"); ok && !strings.ContainsAny(rest, "/?#") {
			v.errorf(path, "cannot use %s: credentials (user:password@) are not allowed in a URL, which gets logged; %s", quote(raw), userinfo)
		} else {
			v.errorf(path, "cannot use %s: an '@' after the host must be written %%40, since it may be a password's", quote(raw))
		}
		return nil, false
	}
	u, err := url.Parse(raw)
	if err != nil {
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err // without the URL, which the message already quotes
		}
		v.errorf(path, "cannot use %s: %v", quote(raw), err)
		return nil, false
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		v.errorf(path, "cannot use %s: want an http or https URL with a host, e.g. %q", quote(raw), "https://host:port/path")
		return nil, false
	}
	if port := u.Port(); port != "" {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			v.errorf(path, "cannot use %s: port %s is not a number from 0 to 65535", quote(raw), quote(port))
			return nil, false
		}
	}
	if u.Hostname() == "" {
		v.errorf(path, "cannot use %s: the host is empty", quote(raw))
		return nil, false
	}
	return u, true
}

// tls checks a tls section.
func (v *validator) tls(base string, t *TLS) {
	if v.failed[base] {
		return
	}
	v.pathToFile(base+".ca_file", &t.CAFile, false)
	v.pathToFile(base+".cert_file", &t.CertFile, false)
	v.pathToFile(base+".key_file", &t.KeyFile, false)
	switch {
	case v.set(base+".cert_file") && !v.set(base+".key_file"):
		v.errorf(base+".cert_file", "set without key_file; a client certificate needs both")
	case v.set(base+".key_file") && !v.set(base+".cert_file"):
		v.errorf(base+".key_file", "set without cert_file; a client certificate needs both")
	}
}

// oneOf checks that exactly one of an inline secret and a file holding it is
// set, in the section at base, and checks the one that is.
func (v *validator) oneOf(base, inlineKey string, inline *string, fileKey string, file *string, what string) {
	ip, fp := base+"."+inlineKey, base+"."+fileKey
	if v.failed[ip] || v.failed[fp] {
		return
	}
	if !v.set(ip) && !v.set(fp) {
		v.errorf(base, "%s is missing; set %s, or %s to read it from a file", inlineKey, inlineKey, fileKey)
		return
	}
	v.conflict(ip, fp, "keep one")
	v.notEmptySecret(ip, *inline)
	v.pathToFile(fp, file, true)
}

// notEmptySecret reports a secret that is present but empty: almost always a
// template variable that was not filled in, and never a secret.
func (v *validator) notEmptySecret(path, value string) {
	if v.set(path) && value == "" {
		v.errorf(path, "empty")
	}
}

// conflict reports two settings that exclude each other, at the later one.
func (v *validator) conflict(a, b, hint string) {
	if !v.set(a) || !v.set(b) || v.failed[a] || v.failed[b] {
		return
	}
	fa, fb := v.fields[a], v.fields[b]
	if fb.line < fa.line || fb.line == fa.line && fb.col < fa.col {
		a, b, fa = b, a, fb
	}
	v.errorf(b, "cannot be used with %s (at %d:%d); %s", a, fa.line, fa.col, hint)
}

// pathToFile checks a path to a file that must be readable now, and anchors a
// relative one to the config file's directory. An absent key is fine.
func (v *validator) pathToFile(path string, p *string, secret bool) {
	if !v.set(path) || v.failed[path] {
		return
	}
	if *p == "" {
		v.errorf(path, "empty; remove the key")
		return
	}
	if !filepath.IsAbs(*p) {
		*p = filepath.Join(v.dir, *p)
	}
	err := v.checkFile(*p, secret)
	if err == nil {
		return
	}
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		err = pe.Err // without the path, which the message names
	}
	v.errorf(path, "cannot read %q: %v", *p, err)
}

func (v *validator) positive(path string, d time.Duration) {
	if d <= 0 {
		v.errorf(path, "%s is not positive", d)
	}
}

// generatorURLFields are the fields of the alert that generator_url is
// executed with: the fields of alert.Alert, which the notify package executes it on.
var generatorURLFields = []string{"Time", "State", "Rule", "Severity", "Labels", "Annotations", "Fingerprint", "Value"}

var templateParseError = regexp.MustCompile(`^template: [^:]*:(\d+): (.*)$`)

// generatorURL checks the generator_url template: it must parse with the
// built-in functions only, and name no field the alert does not have.
// Executing it would find the same with less code, but a template can loop
// for as long as it likes ({{range 1000000000}}), so it is only inspected.
func (v *validator) generatorURL(path, text string) {
	if text == "" {
		return
	}
	t, err := template.New("generator_url").Parse(text)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "template: ")
		if m := templateParseError.FindStringSubmatch(err.Error()); m != nil {
			msg = m[2] + " (template line " + m[1] + ")"
		}
		v.errorf(path, "not a valid Go template: %s", msg)
		return
	}
	if t.Tree == nil || t.Root == nil {
		return
	}
	if name, pos, ok := unknownField(t.Root); ok {
		before := text[:min(int(pos), len(text))]
		line := 1 + strings.Count(before, "\n")
		col := 1 + utf8.RuneCountInString(before[strings.LastIndexByte(before, '\n')+1:])
		v.errorf(path, "the alert has no field %s (template line %d, column %d); it has %s",
			quote(name), line, col, strings.Join(generatorURLFields, ", "))
	}
}

// unknownField finds the first field of the alert that a template names and
// the alert does not have, and where it is. Dot is the alert at the top, and
// in the pipelines of range and with; inside their bodies it is something
// else, and only $.Field is checked there. Templates made with define are
// not checked, since what they are given is not known here.
func unknownField(root *parse.ListNode) (name string, pos parse.Pos, found bool) {
	check := func(ident []string, p parse.Pos) bool {
		if len(ident) > 0 && !slices.Contains(generatorURLFields, ident[0]) {
			name, pos, found = ident[0], p, true
		}
		return found
	}
	var walk func(n parse.Node, dot bool) bool
	walk = func(n parse.Node, dot bool) bool {
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return false
			}
			for _, c := range n.Nodes {
				if walk(c, dot) {
					return true
				}
			}
		case *parse.ActionNode:
			return walk(n.Pipe, dot)
		case *parse.PipeNode:
			if n == nil {
				return false
			}
			for _, c := range n.Cmds {
				if walk(c, dot) {
					return true
				}
			}
		case *parse.CommandNode:
			for _, a := range n.Args {
				if walk(a, dot) {
					return true
				}
			}
		case *parse.FieldNode:
			return dot && check(n.Ident, n.Pos)
		case *parse.VariableNode:
			return len(n.Ident) > 1 && n.Ident[0] == "$" && check(n.Ident[1:], n.Pos)
		case *parse.ChainNode:
			return walk(n.Node, dot)
		case *parse.IfNode:
			return walk(n.Pipe, dot) || walk(n.List, dot) || walk(n.ElseList, dot)
		case *parse.RangeNode:
			return walk(n.Pipe, dot) || walk(n.List, false) || walk(n.ElseList, dot)
		case *parse.WithNode:
			return walk(n.Pipe, dot) || walk(n.List, false) || walk(n.ElseList, dot)
		case *parse.TemplateNode:
			return walk(n.Pipe, dot)
		}
		return false
	}
	walk(root, true)
	return name, pos, found
}
