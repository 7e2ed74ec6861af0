package classify

import (
	"encoding/json"
	"fmt"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/model"
)

// PL/pgSQL bodies are analysed best effort, from the tree pg_query's port of
// the PL/pgSQL compiler produces. The statements whose data flow is static
// are followed: blocks, IF, RETURN expr, RETURN NEXT expr, RETURN QUERY
// (static), PERFORM, SQL statements without INTO, and RAISE (whose
// parameters reach the client as notices). Anything else — assignments and
// SELECT INTO (values flow through variables), loops over queries, EXECUTE
// and RETURN QUERY EXECUTE (dynamic SQL) — makes the body unanalysable, and
// the call incomplete when the body could read sensitive data (reach.go).

// plpgsqlStatement is one statement node of pg_query's PL/pgSQL JSON: an
// object with a single key naming the statement type.
type plpgsqlStatement map[string]json.RawMessage

type plpgsqlExpr struct {
	Expr struct {
		Query     string `json:"query"`
		ParseMode int    `json:"parseMode"`
	} `json:"PLpgSQL_expr"`
}

type plpgsqlBody struct {
	Datums []map[string]struct {
		Refname    string       `json:"refname"`
		DefaultVal *plpgsqlExpr `json:"default_val"`
	} `json:"datums"`
	Action plpgsqlStatement `json:"action"`
}

// plpgsqlFunctionBody returns the columns a PL/pgSQL function returns and
// the levels of the queries it returns (RETURN QUERY), or names the
// construct that keeps its body from being analysed ("" when it was).
// Whether that makes the call incomplete is the caller's decision
// (unanalysable).
func (a *analyzer) plpgsqlFunctionBody(f *catalog.Function) (cols []column, unfollowed string, results []*rowNode) {
	const unparsable = "body (it cannot be parsed)"
	src, ok := plpgsqlWrapper(f)
	if !ok {
		return nil, unparsable, nil
	}
	js, err := pg_query.ParsePlPgSqlToJSON(src)
	if err != nil {
		return nil, unparsable, nil
	}
	var fns []struct {
		Function plpgsqlBody `json:"PLpgSQL_function"`
	}
	if err := json.Unmarshal([]byte(js), &fns); err != nil || len(fns) != 1 {
		return nil, unparsable, nil
	}
	body := fns[0].Function
	w := &plpgsqlWalker{a: a, f: f}
	// Local variables: those with a default carry its lineage; others start
	// NULL and, with assignments unanalysable, stay constant.
	params := map[string]bool{"found": true}
	for _, n := range f.Args {
		params[n] = true
	}
	for _, d := range body.Datums {
		for _, v := range d {
			if v.Refname == "" || params[v.Refname] || strings.HasPrefix(v.Refname, "$") {
				continue
			}
			var src lineage
			if v.DefaultVal != nil {
				src = w.exprLineage(v.DefaultVal)
			}
			a.frame.scope.items[0].cols = append(a.frame.scope.items[0].cols, column{name: v.Refname, src: src})
		}
	}
	w.statement(body.Action)
	if w.unanalysable != "" {
		return nil, w.unanalysable, nil
	}
	return w.out, "", w.results
}

// plpgsqlWrapper builds a CREATE FUNCTION statement around f's body for the
// PL/pgSQL parser, which needs the parameters and whether the function
// returns a set.
func plpgsqlWrapper(f *catalog.Function) (string, bool) {
	tag := "$pgtw$"
	for i := 0; strings.Contains(f.Body, tag); i++ {
		if i > 100 {
			return "", false
		}
		tag = fmt.Sprintf("$pgtw%d$", i)
	}
	var b strings.Builder
	b.WriteString("CREATE FUNCTION f(")
	for i, name := range f.Args {
		if i > 0 {
			b.WriteString(", ")
		}
		if name != "" {
			b.WriteString(model.QuoteIdent(name) + " ")
		}
		typ := "text"
		if i < len(f.ArgTypes) && f.ArgTypes[i] != "" {
			typ = f.ArgTypes[i]
		}
		b.WriteString(typ)
	}
	b.WriteString(") RETURNS ")
	switch {
	case f.ReturnsSet:
		b.WriteString("SETOF record")
	case f.ReturnType == "void" || f.ReturnType == "trigger":
		b.WriteString(f.ReturnType)
	default:
		b.WriteString("record")
	}
	b.WriteString(" LANGUAGE plpgsql AS " + tag + f.Body + tag)
	return b.String(), true
}

type plpgsqlWalker struct {
	a   *analyzer
	f   *catalog.Function
	out []column
	// results are the levels of the queries RETURN QUERY returns.
	results []*rowNode
	// unanalysable names the first statement that cannot be followed.
	unanalysable string
}

func (w *plpgsqlWalker) fail(what string) {
	if w.unanalysable == "" {
		w.unanalysable = what
	}
}

func (w *plpgsqlWalker) statements(raw json.RawMessage) {
	var list []plpgsqlStatement
	if len(raw) == 0 {
		return
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		w.fail("body")
		return
	}
	for _, s := range list {
		w.statement(s)
	}
}

func (w *plpgsqlWalker) statement(s plpgsqlStatement) {
	if w.unanalysable != "" || !w.a.enter() {
		return
	}
	defer w.a.leaveDepth()
	for kind, raw := range s {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(raw, &fields); err != nil {
			w.fail(kind)
			return
		}
		switch kind {
		case "PLpgSQL_stmt_block":
			w.statements(fields["body"])
			if exc := fields["exceptions"]; len(exc) > 0 {
				var block struct {
					Block struct {
						ExcList []struct {
							Exception struct {
								Action json.RawMessage `json:"action"`
							} `json:"PLpgSQL_exception"`
						} `json:"exc_list"`
					} `json:"PLpgSQL_exception_block"`
				}
				if err := json.Unmarshal(exc, &block); err != nil {
					w.fail("exception block")
					return
				}
				for _, e := range block.Block.ExcList {
					w.statements(e.Exception.Action)
				}
			}
		case "PLpgSQL_stmt_if":
			w.a.refer(w.exprField(fields["cond"]))
			w.statements(fields["then_body"])
			var elsifs []struct {
				Elsif struct {
					Cond  json.RawMessage `json:"cond"`
					Stmts json.RawMessage `json:"stmts"`
				} `json:"PLpgSQL_if_elsif"`
			}
			if raw := fields["elsif_list"]; len(raw) > 0 {
				if err := json.Unmarshal(raw, &elsifs); err != nil {
					w.fail("ELSIF")
					return
				}
			}
			for _, e := range elsifs {
				w.a.refer(w.exprField(e.Elsif.Cond))
				w.statements(e.Elsif.Stmts)
			}
			w.statements(fields["else_body"])
		case "PLpgSQL_stmt_return", "PLpgSQL_stmt_return_next":
			expr, ok := fields["expr"]
			if !ok {
				// RETURN of a variable (retvarno) or a bare RETURN: only
				// the latter, ending a set-returning or void function,
				// returns nothing.
				if kind == "PLpgSQL_stmt_return" && (w.f.ReturnsSet || w.f.ReturnType == "void") {
					continue
				}
				w.fail("RETURN of a variable")
				return
			}
			w.out = mergeColumns(w.out, []column{{name: w.f.Name, src: w.exprField(expr)}})
		case "PLpgSQL_stmt_return_query":
			if _, dyn := fields["dynquery"]; dyn {
				w.fail("RETURN QUERY EXECUTE (dynamic SQL)")
				return
			}
			w.a.lastLevel = nil
			w.out = mergeColumns(w.out, w.query(fields["query"]))
			w.results = append(w.results, w.a.takeLevel())
		case "PLpgSQL_stmt_perform":
			w.a.withoutExecution(false, func() { w.run(fields["expr"]) })
		case "PLpgSQL_stmt_execsql":
			if _, into := fields["into"]; into {
				w.fail("SELECT INTO a variable")
				return
			}
			w.a.withoutExecution(false, func() { w.run(fields["sqlstmt"]) })
		case "PLpgSQL_stmt_raise":
			var params []json.RawMessage
			if raw := fields["params"]; len(raw) > 0 {
				if err := json.Unmarshal(raw, &params); err != nil {
					w.fail("RAISE")
					return
				}
			}
			for _, p := range params {
				// Notices reach the client.
				w.a.leave([]column{{src: w.exprField(p)}})
			}
		case "PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors":
			w.fail("EXECUTE (dynamic SQL)")
			return
		default:
			w.fail(strings.TrimPrefix(kind, "PLpgSQL_stmt_") + " statement")
			return
		}
	}
}

// parseExpr parses a PL/pgSQL expression or statement into one statement.
func (w *plpgsqlWalker) parseExpr(raw json.RawMessage) (*pg_query.Node, bool) {
	var e plpgsqlExpr
	if len(raw) == 0 || json.Unmarshal(raw, &e) != nil {
		w.fail("expression")
		return nil, false
	}
	text := e.Expr.Query
	if e.Expr.ParseMode != 0 {
		text = "SELECT " + text
	}
	tree, err := pg_query.Parse(text)
	if err != nil || len(tree.GetStmts()) != 1 {
		w.fail("expression")
		return nil, false
	}
	return tree.GetStmts()[0].GetStmt(), true
}

func (w *plpgsqlWalker) exprLineage(e *plpgsqlExpr) lineage {
	raw, err := json.Marshal(e)
	if err != nil {
		w.fail("expression")
		return nil
	}
	return w.exprField(raw)
}

// exprField returns the lineage of an expression's value.
func (w *plpgsqlWalker) exprField(raw json.RawMessage) lineage {
	return columnsLineage(w.query(raw))
}

// query analyzes a query and returns its output columns.
func (w *plpgsqlWalker) query(raw json.RawMessage) []column {
	n, ok := w.parseExpr(raw)
	if !ok {
		return nil
	}
	return w.a.query(n, nil)
}

// run analyzes a statement that runs for its effects.
func (w *plpgsqlWalker) run(raw json.RawMessage) {
	if n, ok := w.parseExpr(raw); ok {
		w.a.statementOp(n)
	}
}
