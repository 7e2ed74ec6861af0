package log

import (
	"strconv"
	"strings"
)

// redactMessage returns a server message (or detail, or hint) fit for the detector's
// own logs: PostgreSQL quotes the very value a statement failed on (`invalid input
// syntax for type integer: "alice@example.com"`, `Key (email)=(…) already exists`),
// without escaping quotes inside it, so which quote closes a value cannot be known.
// Everything from the first quote or parenthesis to the last one is therefore one
// placeholder, and so are hexadecimal byte dumps (`invalid byte sequence … 0xc3 0x28`).
// Messages of classes whose text the server does not write (RAISE in PL/pgSQL, P0,
// anything outside the classes below) are not shown at all: they are whatever an
// application or an intruder made them.
func redactMessage(sqlState, msg string) string {
	if msg == "" {
		return ""
	}
	switch class := sqlState[:min(2, len(sqlState))]; class {
	case "08", "22", "23", "25", "28", "40", "42", "53", "54", "55", "57", "58":
	default:
		return messageNotShown(len(msg))
	}
	first := strings.IndexAny(msg, `"'(`)
	if first >= 0 {
		last := strings.LastIndexAny(msg, `"')`)
		if last < first {
			last = len(msg) - 1
		}
		msg = msg[:first] + "…" + msg[last+1:]
	}
	if strings.Contains(msg, "0x") {
		f := strings.Fields(msg)
		for i, w := range f {
			if strings.HasPrefix(w, "0x") {
				f[i] = "0x…"
			}
		}
		msg = strings.Join(f, " ")
	}
	return msg
}

func messageNotShown(n int) string {
	return "<message not shown: " + strconv.Itoa(n) + " bytes>"
}
