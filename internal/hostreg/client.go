package hostreg

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hearth-sandbox/hearth/internal/pki"
)

// StatusError is a refusal by the control plane.
type StatusError struct {
	Status  int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("control plane answered %d: %s", e.Status, e.Message)
}

// Registrar performs an agent's registration and renewals, keeping its
// identity files (pki.AgentKeyFile, AgentCertFile, AgentCAFile) in DataDir.
type Registrar struct {
	DataDir string
	HTTP    *http.Client // nil: http.DefaultClient
	// CAFingerprint, when set ("sha256:<hex>", from `hearth server` output
	// or pki.Fingerprint), must match the CA returned at registration: it
	// makes registration over plain HTTP safe from a man in the middle.
	CAFingerprint string
}

// Register exchanges a one-time token for the agent's identity: it creates
// (or reuses) the key in DataDir, sends a CSR, checks and stores the
// answer. address is the agent's RPC listener, host:port, as the control
// plane should dial it.
func (g *Registrar) Register(ctx context.Context, controlPlaneURL, token, name, address string, capacity Capacity) (*pki.Identity, error) {
	key, err := pki.LoadOrCreateKey(g.DataDir)
	if err != nil {
		return nil, err
	}
	csr, err := pki.CreateCSR(key, name)
	if err != nil {
		return nil, err
	}
	var res RegisterResponse
	err = postJSON(ctx, g.client(), controlPlaneURL, "/v1/hosts/register", RegisterRequest{
		Token: token, Name: name, Address: address, CSRPEM: string(csr), Capacity: capacity,
	}, &res, nil)
	if err != nil {
		return nil, fmt.Errorf("hostreg: register: %w", err)
	}
	if err := g.checkPin([]byte(res.CAPEM)); err != nil {
		return nil, err
	}
	id, err := pki.SaveIdentity(g.DataDir, []byte(res.CertPEM), []byte(res.CAPEM))
	if err != nil {
		return nil, fmt.Errorf("hostreg: registration answer: %w", err)
	}
	if id.HostID != res.HostID {
		return nil, fmt.Errorf("hostreg: certificate names host %q, answer says %q", id.HostID, res.HostID)
	}
	return id, nil
}

func (g *Registrar) checkPin(caPEM []byte) error {
	if g.CAFingerprint == "" {
		return nil
	}
	ca, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		return fmt.Errorf("hostreg: CA from control plane: %w", err)
	}
	got := pki.Fingerprint(ca)
	if subtle.ConstantTimeCompare([]byte(strings.ToLower(g.CAFingerprint)), []byte(got)) != 1 {
		return fmt.Errorf("hostreg: control plane CA fingerprint %s does not match the pinned %s", got, g.CAFingerprint)
	}
	return nil
}

func (g *Registrar) client() *http.Client {
	if g.HTTP != nil {
		return g.HTTP
	}
	return http.DefaultClient
}

// Client makes an agent's authenticated calls (heartbeat, renew),
// signing each with the certificate the Keeper currently holds.
type Client struct {
	base    string
	http    *http.Client
	keeper  *pki.Keeper
	dataDir string
}

// NewClient calls controlPlaneURL as the agent whose certificate keeper
// holds; renewed certificates are stored in dataDir. hc nil:
// http.DefaultClient (HTTPS to a publicly trusted control plane, or plain
// HTTP); for a control plane listener with a CA-issued certificate use
// pki.AgentClientTLS in hc's transport.
func NewClient(controlPlaneURL string, hc *http.Client, keeper *pki.Keeper, dataDir string) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: controlPlaneURL, http: hc, keeper: keeper, dataDir: dataDir}
}

func (c *Client) hostID() (string, *tls.Certificate, error) {
	cert := c.keeper.Certificate()
	if cert == nil || cert.Leaf == nil {
		return "", nil, errors.New("hostreg: no agent certificate loaded")
	}
	id, err := pki.HostID(cert.Leaf)
	return id, cert, err
}

// Heartbeat reports capacity and usage.
func (c *Client) Heartbeat(ctx context.Context, hb Heartbeat) (HeartbeatResponse, error) {
	id, cert, err := c.hostID()
	if err != nil {
		return HeartbeatResponse{}, err
	}
	var res HeartbeatResponse
	err = postJSON(ctx, c.http, c.base, "/v1/hosts/"+url.PathEscape(id)+"/heartbeat", hb, &res, cert)
	if err != nil {
		return res, fmt.Errorf("hostreg: heartbeat: %w", err)
	}
	return res, nil
}

// Renew obtains a new certificate for the agent's key, stores it in the
// data dir and returns it; it has the signature of pki.Renew, so
//
//	go keeper.RotateLoop(ctx, time.Hour, client.Renew, log)
//
// keeps the agent's certificate fresh.
func (c *Client) Renew(ctx context.Context) (*tls.Certificate, error) {
	id, cert, err := c.hostID()
	if err != nil {
		return nil, err
	}
	key, err := pki.LoadOrCreateKey(c.dataDir)
	if err != nil {
		return nil, err
	}
	csr, err := pki.CreateCSR(key, id)
	if err != nil {
		return nil, err
	}
	var res RenewResponse
	if err := postJSON(ctx, c.http, c.base, "/v1/hosts/"+url.PathEscape(id)+"/renew", RenewRequest{CSRPEM: string(csr)}, &res, cert); err != nil {
		return nil, fmt.Errorf("hostreg: renew: %w", err)
	}
	// The CA must be the one we already trust: a renewal never moves an
	// agent to another authority.
	if ca, err := pki.ParseCertPEM([]byte(res.CAPEM)); err != nil || pki.Fingerprint(ca) != c.trustedCA() {
		return nil, errors.New("hostreg: renew: control plane answered with another CA")
	}
	nid, err := pki.SaveIdentity(c.dataDir, []byte(res.CertPEM), []byte(res.CAPEM))
	if err != nil {
		return nil, fmt.Errorf("hostreg: renew: %w", err)
	}
	if nid.HostID != id {
		return nil, fmt.Errorf("hostreg: renew: certificate for host %q, want %q", nid.HostID, id)
	}
	return nid.Cert, nil
}

func (c *Client) trustedCA() string {
	id, err := pki.LoadIdentity(c.dataDir)
	if err != nil {
		return ""
	}
	return pki.Fingerprint(id.CA)
}

// postJSON posts in as JSON to base+path and decodes a 200 answer into out;
// other statuses become *StatusError. cert, if set, signs the request.
func postJSON(ctx context.Context, hc *http.Client, base, path string, in, out any, cert *tls.Certificate) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(base, "/")+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if cert != nil {
		if err := signRequest(req, body, cert, time.Now()); err != nil {
			return err
		}
	}
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxBody))
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		var eb errorBody
		_ = json.Unmarshal(b, &eb) // best effort: the status says enough
		if eb.Error == "" {
			eb.Error = http.StatusText(res.StatusCode)
		}
		return &StatusError{Status: res.StatusCode, Message: eb.Error}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}
