package dashboard

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hearth-sandbox/hearth/internal/forwarded"
)

const (
	// SessionCookie holds the JWT; httpOnly, so page scripts never see it.
	SessionCookie = "hearth_session"
	// CSRFCookie holds the double-submit token; readable by the page, which
	// echoes it in CSRFHeader.
	CSRFCookie = "hearth_csrf"
	CSRFHeader = "X-CSRF-Token"

	maxCredentialsBytes = 16 << 10
)

type credentials struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

// login: POST /auth/session {email,password} → 200 {expires_at}, cookies set.
func (h *handler) login(w http.ResponseWriter, r *http.Request) {
	h.startSession(w, r, "/v1/auth/login", http.StatusOK)
}

// signup: POST /auth/signup {email,password} → 201 {user, team, expires_at},
// cookies set. The new account is logged in at once.
func (h *handler) signup(w http.ResponseWriter, r *http.Request) {
	h.startSession(w, r, "/v1/auth/signup", http.StatusCreated)
}

// startSession forwards the credentials to the API route apiPath in-process
// and turns the token of a successful answer into cookies. API errors
// (400, 401, 409, 429 ...) are passed through unchanged.
func (h *handler) startSession(w http.ResponseWriter, r *http.Request, apiPath string, okStatus int) {
	// A JSON body cannot be sent cross-site without a CORS preflight, which
	// hearth never grants: this stops login CSRF (logging a victim into the
	// attacker's account). Origin, when sent, must be this host.
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "send credentials as application/json")
		return
	}
	if !sameOrigin(r) {
		writeError(w, http.StatusForbidden, "cross-origin request refused")
		return
	}
	var in credentials
	if err := json.NewDecoder(io.LimitReader(r.Body, maxCredentialsBytes)).Decode(&in); err != nil {
		writeError(w, http.StatusBadRequest, "request body must be JSON {\"email\", \"password\"}")
		return
	}
	body, err := json.Marshal(in)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding credentials failed")
		return
	}
	req := r.Clone(r.Context())
	req.URL = &url.URL{Path: apiPath}
	req.RequestURI = apiPath
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	req.Header = http.Header{"Content-Type": {"application/json"}}

	rec := newRecorder()
	h.api.ServeHTTP(rec, req)
	if rec.status < 200 || rec.status > 299 {
		// The API's own error ({code, message}) and headers like Retry-After.
		for _, k := range []string{"Content-Type", "Retry-After", "X-Request-Id"} {
			if v := rec.header.Get(k); v != "" {
				w.Header().Set(k, v)
			}
		}
		w.WriteHeader(rec.status)
		_, _ = w.Write(rec.body.Bytes())
		return
	}
	var out struct {
		Token string          `json:"token"`
		User  json.RawMessage `json:"user,omitempty"`
		Team  json.RawMessage `json:"team,omitempty"`
	}
	if err := json.Unmarshal(rec.body.Bytes(), &out); err != nil || out.Token == "" {
		h.log.ErrorContext(r.Context(), "dashboard: API answered without a token", "path", apiPath, "err", err)
		writeError(w, http.StatusBadGateway, "the API answered without a session token")
		return
	}
	exp, err := h.setSessionCookies(w, r, out.Token)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "creating the session failed")
		return
	}
	resp := map[string]any{"expires_at": exp}
	if len(out.User) > 0 {
		resp["user"] = out.User
	}
	if len(out.Team) > 0 {
		resp["team"] = out.Team
	}
	writeJSON(w, okStatus, resp)
}

// logout: DELETE /auth/session → 204, both cookies expired. It needs no
// CSRF token: the worst a forged logout can do is log someone out.
func (h *handler) logout(w http.ResponseWriter, r *http.Request) {
	secure := h.secureFor(r)
	for _, c := range []*http.Cookie{
		{Name: SessionCookie, HttpOnly: true},
		{Name: CSRFCookie},
	} {
		c.Path, c.MaxAge, c.Secure, c.SameSite = "/", -1, secure, http.SameSiteStrictMode
		http.SetCookie(w, c)
	}
	w.WriteHeader(http.StatusNoContent)
}

// setSessionCookies sets the JWT and a fresh CSRF token. Both expire with
// the JWT (a browser-session cookie when the expiry cannot be read).
func (h *handler) setSessionCookies(w http.ResponseWriter, r *http.Request, jwt string) (*time.Time, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	csrf := hex.EncodeToString(b[:])
	exp, ok := jwtExpiry(jwt)
	secure := h.secureFor(r)
	for _, c := range []*http.Cookie{
		{Name: SessionCookie, Value: jwt, HttpOnly: true},
		{Name: CSRFCookie, Value: csrf},
	} {
		c.Path, c.Secure, c.SameSite = "/", secure, http.SameSiteStrictMode
		if ok {
			c.Expires = exp
		}
		http.SetCookie(w, c)
	}
	if !ok {
		return nil, nil
	}
	return &exp, nil
}

func (h *handler) secureFor(r *http.Request) bool {
	return h.secure || forwarded.Scheme(r) == "https"
}

// jwtExpiry reads the exp claim of a token the API just issued (so it is not
// verified here; the API verifies it on every use).
func jwtExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp <= 0 {
		return time.Time{}, false
	}
	return time.Unix(claims.Exp, 0), true
}

// sessionToken returns the JWT of the request's session cookie, or "".
func sessionToken(r *http.Request) string {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return ""
	}
	return c.Value
}

// csrfOK reports whether token equals the request's CSRF cookie
// (constant-time; an empty cookie or token never matches).
func csrfOK(r *http.Request, token string) bool {
	c, err := r.Cookie(CSRFCookie)
	if err != nil || c.Value == "" || token == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(c.Value), []byte(token)) == 1
}

// sameOrigin is false when the request carries an Origin whose host is not
// the request's Host. Requests without Origin (same-origin GETs, non-browser
// clients) pass: browsers always send Origin on cross-origin requests.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// WrapAPI returns apiHandler behind the cookie layer: a dashboard request
// (session cookie, no Authorization and no X-API-Key) reaches the API with
// "Authorization: Bearer <jwt>". Unsafe methods must carry X-CSRF-Token
// matching the CSRF cookie and come from this origin, else 403 JSON. Requests
// with their own credentials, or without the cookie, pass untouched.
func WrapAPI(apiHandler http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" || r.Header.Get("X-API-Key") != "" {
			apiHandler.ServeHTTP(w, r)
			return
		}
		jwt := sessionToken(r)
		if jwt == "" {
			apiHandler.ServeHTTP(w, r)
			return
		}
		if !safeMethod(r.Method) && (!csrfOK(r, r.Header.Get(CSRFHeader)) || !sameOrigin(r)) {
			writeError(w, http.StatusForbidden, "missing or invalid CSRF token (send the hearth_csrf cookie's value in X-CSRF-Token)")
			return
		}
		r2 := r.Clone(r.Context())
		r2.Header.Set("Authorization", "Bearer "+jwt)
		apiHandler.ServeHTTP(w, r2)
	})
}

// recorder buffers an in-process API response (credentials answers are
// small).
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes the API's error shape: {"code": status, "message": ...}.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"code": status, "message": msg})
}
