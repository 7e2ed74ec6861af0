// Package webapp is a small web shop with a SQL injection, for end-to-end tests of
// what the detector sees when an intruder comes in through an application (issue #16):
// an HTTP server over the application's own database role, whose product page
// concatenates its id parameter into the SQL it runs and shows the rows it got — or the
// database's error text — to whoever asked, as careless applications do. Its other
// pages (the catalogue, search, login, signup, a profile) use bound parameters, and
// Browse plays their users.
//
// It is a test kit: production code never imports it (internal/layout checks it).
package webapp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

// Role is the database role the application connects as.
const Role = "webapp"

// Products is the number of products Start creates.
const Products = 100

// poolSize is the number of connections the application holds.
const poolSize = 4

// App is the application running over a test's database.
type App struct {
	// URL is the server's base URL (http://127.0.0.1:port).
	URL  string
	pool *pool
	srv  *httptest.Server
}

// pool is a fixed set of connections as the application's role, taken one per request.
type pool struct{ conns chan *pgx.Conn }

// with runs f on a connection of the pool, waiting for one.
func (p *pool) with(ctx context.Context, f func(*pgx.Conn) error) error {
	select {
	case c := <-p.conns:
		defer func() { p.conns <- c }()
		return f(c)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Start creates the shop's schema in db beside public.users (which must exist:
// workload.Users), the role webapp with the grants an application has (read its
// catalogue, look users up, sign them up), and serves the application until the test
// ends.
func Start(t testing.TB, db *pgtest.Database) *App {
	t.Helper()
	db.Exec(t, `CREATE TABLE public.products (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2) NOT NULL);
		INSERT INTO public.products SELECT i, 'product ' || i, (i * 1.5)::numeric(10,2) FROM generate_series(1, 100) i;
		ANALYZE public.products`)
	db.CreateRole(t, Role)
	db.Exec(t, `GRANT SELECT ON public.products TO webapp;
		GRANT SELECT, INSERT ON public.users TO webapp;
		GRANT USAGE ON SEQUENCE public.users_id_seq TO webapp`)
	cfg, err := pgx.ParseConfig(db.DSN(Role))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = "shop"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := &pool{conns: make(chan *pgx.Conn, poolSize)}
	for range poolSize {
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("webapp: connect as %s: %v", Role, err)
		}
		p.conns <- c
	}
	a := &App{pool: p}
	a.srv = httptest.NewServer(a.routes())
	a.URL = a.srv.URL
	t.Cleanup(func() {
		a.srv.Close() // waits for the requests in flight: every connection is back
		for range poolSize {
			c := <-p.conns
			_ = c.Close(context.Background())
		}
	})
	return a
}

func (a *App) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /product", a.product)
	mux.HandleFunc("GET /products", a.products)
	mux.HandleFunc("GET /search", a.search)
	mux.HandleFunc("POST /login", a.login)
	mux.HandleFunc("POST /signup", a.signup)
	mux.HandleFunc("GET /profile", a.profile)
	return mux
}

// product is the vulnerable page: the id is concatenated into the statement, run with
// the simple protocol (as a driver interpolating client-side would), and the rows — or
// the database's error — are written back.
func (a *App) product(w http.ResponseWriter, r *http.Request) {
	sql := "SELECT id, name, price FROM products WHERE id = " + r.URL.Query().Get("id")
	a.query(w, r, true, sql, pgx.QueryExecModeSimpleProtocol)
}

// products lists the catalogue 20 to a page, as an ORM paginates.
func (a *App) products(w http.ResponseWriter, r *http.Request) {
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	a.query(w, r, false, `SELECT products.id, products.name, products.price FROM products ORDER BY products.id LIMIT $1 OFFSET $2`,
		20, max(page, 0)*20)
}

func (a *App) search(w http.ResponseWriter, r *http.Request) {
	a.query(w, r, false, `SELECT id, name, price FROM products WHERE name ILIKE $1 ORDER BY id LIMIT 20`,
		"%"+r.URL.Query().Get("q")+"%")
}

// login checks a password against the stored hash (the hashes of workload.Users are not
// real bcrypt: a password "matches" when it is the hash itself, which is enough to run
// the statement an application runs).
func (a *App) login(w http.ResponseWriter, r *http.Request) {
	var id int64
	var hash string
	err := a.pool.with(r.Context(), func(c *pgx.Conn) error {
		return c.QueryRow(r.Context(), `SELECT id, password_hash FROM users WHERE email = $1`, r.FormValue("email")).Scan(&id, &hash)
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows) || err == nil && hash != r.FormValue("password"):
		http.Error(w, "wrong email or password", http.StatusUnauthorized)
	case err != nil:
		http.Error(w, "database error", http.StatusInternalServerError)
	default:
		fmt.Fprintf(w, "welcome %d\n", id)
	}
}

func (a *App) signup(w http.ResponseWriter, r *http.Request) {
	var id int64
	if err := a.pool.with(r.Context(), func(c *pgx.Conn) error {
		return c.QueryRow(r.Context(), `INSERT INTO users (email, username, password_hash) VALUES ($1, $2, $3) RETURNING id`,
			r.FormValue("email"), r.FormValue("username"), "$2b$12$"+r.FormValue("password")).Scan(&id)
	}); err != nil {
		http.Error(w, "cannot sign up", http.StatusConflict)
		return
	}
	fmt.Fprintf(w, "signed up %d\n", id)
}

// profile shows a user's name and email by id, a bound parameter.
func (a *App) profile(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.URL.Query().Get("id"), 10, 64)
	if err != nil {
		http.Error(w, "bad id", http.StatusBadRequest)
		return
	}
	var name, email string
	if err := a.pool.with(r.Context(), func(c *pgx.Conn) error {
		return c.QueryRow(r.Context(), `SELECT username, email FROM users WHERE id = $1`, id).Scan(&name, &email)
	}); err != nil {
		http.Error(w, "no such user", http.StatusNotFound)
		return
	}
	fmt.Fprintf(w, "%s <%s>\n", name, email)
}

// query runs sql and writes each row as its values separated by tabs, a line per row;
// on an error, the database's error text when showErrors (the careless page), a bare
// "database error" otherwise.
func (a *App) query(w http.ResponseWriter, r *http.Request, showErrors bool, sql string, args ...any) {
	var b strings.Builder
	err := a.pool.with(r.Context(), func(c *pgx.Conn) error {
		rows, err := c.Query(r.Context(), sql, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				return err
			}
			for i, v := range vals {
				if i > 0 {
					b.WriteByte('\t')
				}
				fmt.Fprint(&b, v)
			}
			b.WriteByte('\n')
		}
		return rows.Err()
	})
	switch {
	case err != nil && showErrors:
		http.Error(w, "database error: "+err.Error(), http.StatusInternalServerError)
	case err != nil:
		http.Error(w, "database error", http.StatusInternalServerError)
	default:
		_, _ = io.WriteString(w, b.String())
	}
}

// Get requests path (with its query) and returns the status and body.
func (a *App) Get(ctx context.Context, pathAndQuery string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL+pathAndQuery, nil)
	if err != nil {
		return 0, "", err
	}
	return do(req)
}

// Product requests the vulnerable page with id as its parameter, escaped for the URL.
func (a *App) Product(ctx context.Context, id string) (int, string, error) {
	return a.Get(ctx, "/product?id="+url.QueryEscape(id))
}

func (a *App) post(ctx context.Context, path string, form url.Values) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(req)
}

func do(req *http.Request) (int, string, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Browse plays the application's users against every page but the injection, at
// about perSecond requests a second, until the test ends or the returned stop is
// called: product pages by a numeric id, catalogue pages, searches, logins (one in
// ten with an email nobody has), signups, profiles, and broken links to the product
// page now and then (errors in the server log). users is the number of users
// workload.Users made. Four users browse in turn, each requesting every page within
// its first seven requests. The test fails if a page answers with a server error. Stop returns the
// number of requests made.
func (a *App) Browse(t testing.TB, users, perSecond int) (stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		n       int
		failure error
	)
	pages := []func(ctx context.Context, rng *rand.Rand, i int) (int, string, error){
		func(ctx context.Context, rng *rand.Rand, _ int) (int, string, error) {
			return a.Product(ctx, strconv.Itoa(1+rng.IntN(Products)))
		},
		func(ctx context.Context, rng *rand.Rand, _ int) (int, string, error) {
			return a.Get(ctx, fmt.Sprintf("/products?page=%d", rng.IntN(5)))
		},
		func(ctx context.Context, rng *rand.Rand, _ int) (int, string, error) {
			return a.Get(ctx, "/search?q="+url.QueryEscape(fmt.Sprintf("product %d", rng.IntN(10))))
		},
		func(ctx context.Context, rng *rand.Rand, i int) (int, string, error) {
			// The hashes of workload.Users are not real: every login is refused after
			// the lookup, which is the statement an application runs.
			email := fmt.Sprintf("user%d@example.com", 1+rng.IntN(users))
			if i%10 == 0 {
				email = fmt.Sprintf("nobody%d@example.com", i) // a mistyped email
			}
			code, body, err := a.post(ctx, "/login", url.Values{"email": {email}, "password": {"secret"}})
			if code == http.StatusUnauthorized {
				code = http.StatusOK // a wrong password is an answer, not a failure
			}
			return code, body, err
		},
		func(ctx context.Context, rng *rand.Rand, i int) (int, string, error) {
			name := fmt.Sprintf("browse%d_%d", i, rng.Int())
			return a.post(ctx, "/signup", url.Values{"email": {name + "@example.com"}, "username": {name}, "password": {"pw"}})
		},
		func(ctx context.Context, rng *rand.Rand, _ int) (int, string, error) {
			return a.Get(ctx, fmt.Sprintf("/profile?id=%d", 1+rng.IntN(users)))
		},
		// A crawler's broken links to the product page now and then ("12abc": a
		// syntax error in the server log, on no sensitive table).
		func(ctx context.Context, rng *rand.Rand, i int) (int, string, error) {
			if (i/7)%5 != 0 {
				return a.Product(ctx, strconv.Itoa(1+rng.IntN(Products)))
			}
			code, body, err := a.Product(ctx, fmt.Sprintf("%dabc", 1+rng.IntN(Products)))
			if code == http.StatusInternalServerError {
				code = http.StatusOK // the page's error is the answer
			}
			return code, body, err
		},
	}
	const workers = 4
	interval := time.Duration(workers) * time.Second / time.Duration(max(perSecond, 1))
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for i := w; ; i += workers {
				code, body, err := pages[i%len(pages)](ctx, rng, i)
				if ctx.Err() != nil {
					return
				}
				mu.Lock()
				n++
				switch {
				case failure != nil:
				case err != nil:
					failure = fmt.Errorf("page %d: %w", i%len(pages), err)
				case code >= 500:
					failure = fmt.Errorf("page %d: status %d: %s", i%len(pages), code, body)
				}
				mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}()
	}
	var once sync.Once
	stop = func() int {
		once.Do(func() {
			cancel()
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			if failure != nil {
				t.Errorf("benign traffic: %v", failure)
			}
		})
		mu.Lock()
		defer mu.Unlock()
		return n
	}
	t.Cleanup(func() { stop() })
	return stop
}
