package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/thawhq/thaw/deploy"
)

// DefaultTimeout bounds one request of a Client made by New.
const DefaultTimeout = 30 * time.Second

// maxBody bounds how much of a response body the client reads.
const maxBody = 32 << 20

// Client talks to one thaw server's deploy API as one user. Its methods are
// safe for concurrent use.
type Client struct {
	// BaseURL is the server's address, e.g. "http://127.0.0.1:8080". A
	// missing scheme means http; a trailing slash is ignored.
	BaseURL string
	// Token is the user's API token, sent as "Authorization: Bearer <token>".
	Token string
	// HTTP sends the requests; nil means http.DefaultClient.
	HTTP *http.Client
}

// New returns a Client for the server at baseURL ("http://host:port", or
// "host:port") using token, with a DefaultTimeout per request.
func New(baseURL, token string) *Client {
	return &Client{
		BaseURL: NormalizeURL(baseURL),
		Token:   token,
		HTTP:    &http.Client{Timeout: DefaultTimeout},
	}
}

// NormalizeURL adds "http://" to an address without a scheme and drops
// trailing slashes: "127.0.0.1:8080/" -> "http://127.0.0.1:8080".
func NormalizeURL(addr string) string {
	addr = strings.TrimSpace(addr)
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return strings.TrimRight(addr, "/")
}

// Create creates a deployment (POST /deploy/llm) and returns it.
func (c *Client) Create(ctx context.Context, req deploy.CreateRequest) (deploy.View, error) {
	return decodeView(c.CreateRaw(ctx, req))
}

// CreateRaw is Create returning the server's JSON unchanged.
func (c *Client) CreateRaw(ctx context.Context, req deploy.CreateRequest) (json.RawMessage, error) {
	return c.do(ctx, http.MethodPost, "/deploy/llm", req)
}

// List returns the caller's deployments (GET /deploy/list), only those with
// the given status unless status is empty.
func (c *Client) List(ctx context.Context, status string) ([]deploy.View, error) {
	raws, err := c.ListRaw(ctx, status)
	if err != nil {
		return nil, err
	}
	views := make([]deploy.View, 0, len(raws))
	for i, raw := range raws {
		var v deploy.View
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("decode deployment %d of the list: %w", i, err)
		}
		views = append(views, v)
	}
	return views, nil
}

// ListRaw is List returning each deploy object's JSON unchanged. It accepts
// a bare array as well as {"data":[...]} or {"deployments":[...]}.
func (c *Client) ListRaw(ctx context.Context, status string) ([]json.RawMessage, error) {
	path := "/deploy/list"
	if status != "" {
		path += "?" + url.Values{"status": {status}}.Encode()
	}
	body, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	items, err := listItems(body)
	if err != nil {
		return nil, fmt.Errorf("decode GET %s: %w", path, err)
	}
	return items, nil
}

// listItems finds the array of deploy objects in a list response.
func listItems(body []byte) ([]json.RawMessage, error) {
	body = bytes.TrimSpace(body)
	items := []json.RawMessage{}
	if len(body) > 0 && body[0] == '[' {
		err := json.Unmarshal(body, &items)
		return items, err
	}
	var wrapped struct {
		Data        []json.RawMessage `json:"data"`
		Deployments []json.RawMessage `json:"deployments"`
	}
	if err := json.Unmarshal(body, &wrapped); err != nil {
		return nil, err
	}
	switch {
	case wrapped.Data != nil:
		items = wrapped.Data
	case wrapped.Deployments != nil:
		items = wrapped.Deployments
	default:
		return nil, errors.New(`want a JSON array of deployments (or {"data":[...]})`)
	}
	return items, nil
}

// Get returns one deployment (GET /deploy/{id}).
func (c *Client) Get(ctx context.Context, id string) (deploy.View, error) {
	return decodeView(c.GetRaw(ctx, id))
}

// GetRaw is Get returning the server's JSON unchanged.
func (c *Client) GetRaw(ctx context.Context, id string) (json.RawMessage, error) {
	path, err := deployPath(id)
	if err != nil {
		return nil, err
	}
	return c.do(ctx, http.MethodGet, path, nil)
}

// Update replaces a deployment's settings (PUT /deploy/{id}) and returns the
// deployment. Both fields of s are sent: to change one, read the other first.
func (c *Client) Update(ctx context.Context, id string, s deploy.Settings) (deploy.View, error) {
	return decodeView(c.UpdateRaw(ctx, id, s))
}

// UpdateRaw is Update returning the server's JSON unchanged.
func (c *Client) UpdateRaw(ctx context.Context, id string, s deploy.Settings) (json.RawMessage, error) {
	path, err := deployPath(id)
	if err != nil {
		return nil, err
	}
	return c.do(ctx, http.MethodPut, path, deploy.UpdateRequest{Settings: &s})
}

// Delete deletes a deployment (DELETE /deploy/{id}), stopping its instances.
func (c *Client) Delete(ctx context.Context, id string) error {
	_, err := c.DeleteRaw(ctx, id)
	return err
}

// DeleteRaw is Delete returning the server's answer unchanged: thaw sends
// the deleted deploy object; a server may also send another object, or
// nothing at all (204), which comes back as an empty RawMessage.
func (c *Client) DeleteRaw(ctx context.Context, id string) (json.RawMessage, error) {
	path, err := deployPath(id)
	if err != nil {
		return nil, err
	}
	return c.do(ctx, http.MethodDelete, path, nil)
}

// deployPath is the URL path of one deployment.
func deployPath(id string) (string, error) {
	if strings.TrimSpace(id) == "" {
		return "", errors.New("empty deployment id")
	}
	return "/deploy/" + url.PathEscape(id), nil
}

// decodeView decodes one deploy object, passing err through.
func decodeView(raw json.RawMessage, err error) (deploy.View, error) {
	var v deploy.View
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("decode deployment: %w", err)
	}
	return v, nil
}

// do sends one request with in (if not nil) as its JSON body and returns the
// body of a 2xx answer; other answers become *Error.
func (c *Client) do(ctx context.Context, method, path string, in any) (json.RawMessage, error) {
	return c.doAccept(ctx, method, path, "application/json", in)
}

// doAccept is do asking for the media type accept.
func (c *Client) doAccept(ctx context.Context, method, path, accept string, in any) ([]byte, error) {
	base := NormalizeURL(c.BaseURL)
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Accept", accept)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, ctx.Err())
		}
		return nil, fmt.Errorf("%w (is thaw running at %s?)", err, base)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, decodeError(resp.StatusCode, b)
	}
	return b, nil
}
