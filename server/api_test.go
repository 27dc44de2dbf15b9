package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/netvol/netvol/server/api"

	"github.com/sirupsen/logrus"
)

const testToken = "s3cret-token"

type apiClient struct {
	t     *testing.T
	url   string
	token string
}

func newAPI(t *testing.T) (*apiClient, *Service, *clock) {
	t.Helper()
	s, clk := newService(t)
	log := logrus.New()
	log.SetOutput(io.Discard)
	srv := httptest.NewServer(NewAPI(s, testToken, log))
	t.Cleanup(srv.Close)
	return &apiClient{t: t, url: srv.URL, token: testToken}, s, clk
}

// do sends a request and decodes a JSON answer into out (when not nil).
func (c *apiClient) do(method, path, body string, out any) (int, api.ErrorBody) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.url+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e api.ErrorBody
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(data, &e); err != nil || e.Code == "" || e.Error == "" {
			c.t.Fatalf("%s %s: %d with a body that is not an API error: %q", method, path, resp.StatusCode, data)
		}
		return resp.StatusCode, e
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			c.t.Fatalf("%s %s: %v in %q", method, path, err, data)
		}
	}
	return resp.StatusCode, e
}

// must sends a request that must answer status.
func (c *apiClient) must(status int, method, path, body string, out any) {
	c.t.Helper()
	if got, e := c.do(method, path, body, out); got != status {
		c.t.Fatalf("%s %s %s: %d %+v, want %d", method, path, body, got, e, status)
	}
}

// refused sends a request that must fail with status and code.
func (c *apiClient) refused(status int, code, method, path, body string) string {
	c.t.Helper()
	got, e := c.do(method, path, body, nil)
	if got != status || e.Code != code {
		c.t.Fatalf("%s %s %.80s: %d %+v, want %d %s", method, path, body, got, e, status, code)
	}
	return e.Error
}

func TestAPIVolumes(t *testing.T) {
	c, _, _ := newAPI(t)
	var v api.Volume
	c.must(201, "POST", "/v1/volumes", `{"name":"data","size":"64M","labels":{"app":"db"}}`, &v)
	if v.Name != "data" || v.Size != 64<<20 || v.Labels["app"] != "db" || v.Allocated == 0 || v.Attachments == nil {
		t.Fatalf("created %+v", v)
	}
	c.must(201, "POST", "/v1/volumes", `{"name":"plain","size":1048576}`, nil)
	c.must(201, "POST", "/v1/volumes", `{"name":"clone","from":"data"}`, &v)
	if v.From != "data" || v.Size != 64<<20 {
		t.Fatalf("clone %+v", v)
	}
	c.must(200, "GET", "/v1/volumes/plain", "", &v)
	if v.Size != 1<<20 {
		t.Fatalf("get %+v", v)
	}
	var list []api.Volume
	c.must(200, "GET", "/v1/volumes", "", &list)
	if len(list) != 3 || list[0].Name != "clone" {
		t.Fatalf("list %+v", list)
	}
	c.must(200, "POST", "/v1/volumes/plain/resize", `{"size":"2M"}`, &v)
	if v.Size != 2<<20 {
		t.Fatalf("resized %+v", v)
	}
	c.refused(400, api.CodeInvalid, "POST", "/v1/volumes/plain/resize", `{"size":"1M"}`)
	c.refused(404, api.CodeNotFound, "POST", "/v1/volumes/nope/resize", `{"size":"1M"}`)
	c.refused(409, api.CodeInUse, "DELETE", "/v1/volumes/data", "")
	c.must(204, "DELETE", "/v1/volumes/clone", "", nil)
	c.must(204, "DELETE", "/v1/volumes/data", "", nil)
	c.refused(404, api.CodeNotFound, "GET", "/v1/volumes/data", "")
	c.refused(404, api.CodeNotFound, "DELETE", "/v1/volumes/data", "")
	c.refused(409, api.CodeExists, "POST", "/v1/volumes", `{"name":"plain","size":"1M"}`)
	c.must(200, "GET", "/healthz", "", nil)
	resp, err := http.Get(c.url + "/healthz") // no token needed
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz without a token: %v %v", resp, err)
	}
	resp.Body.Close()
	req, _ := http.NewRequest("GET", c.url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "netvol_volumes 1\n") {
		t.Fatalf("metrics: %d %s", resp.StatusCode, body)
	}
}

// Bad requests are refused with a clear error and change nothing.
func TestAPIRefusesBadRequests(t *testing.T) {
	c, s, _ := newAPI(t)
	c.must(201, "POST", "/v1/volumes", `{"name":"v","size":"1M"}`, nil)
	for body, want := range map[string]string{
		`{"name":"../etc","size":"1M"}`:            "volume name",
		`{"name":"a b","size":"1M"}`:               "volume name",
		`{"name":"","size":"1M"}`:                  "volume name",
		`{"name":"x","size":"0"}`:                  "more than zero",
		`{"name":"x","size":0}`:                    "more than zero",
		`{"name":"x","size":"-1G"}`:                "size",
		`{"name":"x","size":"1.5G"}`:               "size",
		`{"name":"x","size":"lots"}`:               "size",
		`{"name":"x","size":"2G"}`:                 "over the limit",
		`{"name":"x"}`:                             "more than zero",
		`{"name":"x","size":"1M","color":"red"}`:   "unknown field",
		`{"name":"x","size":"1M"} {"name":"y"}`:    "more than one",
		`{"name":"x","size":"1M"`:                  "request body",
		`[]`:                                       "request body",
		`{"name":"x","size":"1M","labels":"oops"}`: "request body",
	} {
		if msg := c.refused(400, api.CodeInvalid, "POST", "/v1/volumes", body); !strings.Contains(msg, want) {
			t.Errorf("%s: error %q does not mention %q", body, msg, want)
		}
	}
	big := `{"name":"x","size":"1M","labels":{"a":"` + strings.Repeat("a", 1<<20) + `"}}`
	c.refused(413, api.CodeInvalid, "POST", "/v1/volumes", big)
	c.refused(400, api.CodeInvalid, "POST", "/v1/volumes/v/attachments", `{"node":"n1","mode":"rw","extra":1}`)
	c.refused(400, api.CodeInvalid, "POST", "/v1/volumes/v/attachments", `{"node":"n1","mode":"rwx"}`)
	c.refused(400, api.CodeInvalid, "POST", "/v1/volumes/v/attachments", `{"node":"","mode":"rw"}`)
	c.refused(400, api.CodeInvalid, "POST", "/v1/volumes/v/resize", `{"size":"2M","grow":true}`)

	for _, tok := range []string{"", "wrong", testToken + "x", strings.ToUpper(testToken)} {
		bad := &apiClient{t: t, url: c.url, token: tok}
		bad.refused(401, api.CodeUnauthorized, "POST", "/v1/volumes", `{"name":"x","size":"1M"}`)
		bad.refused(401, api.CodeUnauthorized, "GET", "/v1/volumes", "")
		bad.refused(401, api.CodeUnauthorized, "DELETE", "/v1/volumes/v", "")
		bad.refused(401, api.CodeUnauthorized, "POST", "/v1/volumes/v/attachments", `{"node":"n1","mode":"rw"}`)
		bad.refused(401, api.CodeUnauthorized, "GET", "/metrics", "")
	}
	req, _ := http.NewRequest("GET", c.url+"/v1/volumes", nil)
	req.Header.Set("Authorization", "Basic "+testToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("Basic auth: %v %v", resp, err)
	}

	var list []api.Volume
	c.must(200, "GET", "/v1/volumes", "", &list)
	if len(list) != 1 || list[0].Name != "v" || list[0].Size != 1<<20 || len(list[0].Attachments) != 0 {
		t.Fatalf("refused requests changed the registry: %+v", list)
	}
	if files := imageFiles(t, s); len(files) != 1 {
		t.Fatalf("refused requests left files: %v", files)
	}
	if _, err := os.Stat(s.dir); err != nil {
		t.Fatal(err)
	}
}

func TestAPIAttachments(t *testing.T) {
	c, _, clk := newAPI(t)
	c.must(201, "POST", "/v1/volumes", `{"name":"v","size":"4M"}`, nil)
	var g api.Grant
	c.must(200, "POST", "/v1/volumes/v/attachments", `{"node":"node-1","mode":"rw"}`, &g)
	if !strings.HasPrefix(g.Export, "v.") || g.Generation != 1 || !g.Expires.Equal(clk.Now().Add(15e9)) {
		t.Fatalf("grant %+v", g)
	}
	msg := c.refused(409, api.CodeConflict, "POST", "/v1/volumes/v/attachments", `{"node":"node-2","mode":"rw"}`)
	if !strings.Contains(msg, `"node-1"`) {
		t.Fatalf("conflict does not name the holder: %q", msg)
	}
	var v api.Volume
	c.must(200, "GET", "/v1/volumes/v", "", &v)
	if len(v.Attachments) != 1 || v.Attachments[0] != (api.Attachment{Node: "node-1", Mode: "rw", Generation: 1, Expires: g.Expires, ExpiresInMS: 15000}) {
		t.Fatalf("attachments %+v", v.Attachments)
	}
	c.refused(409, api.CodeInUse, "DELETE", "/v1/volumes/v", "")
	c.must(201, "POST", "/v1/volumes", `{"name":"c","from":"v"}`, nil) // a clone of a volume in use
	clk.Add(5e9)
	var l api.Lease
	c.must(200, "POST", "/v1/volumes/v/attachments/node-1/renew", "", &l)
	if !l.Expires.Equal(clk.Now().Add(15e9)) {
		t.Fatalf("renewed to %v", l.Expires)
	}
	c.refused(404, api.CodeNotFound, "POST", "/v1/volumes/v/attachments/node-2/renew", "")
	c.refused(404, api.CodeNotFound, "POST", "/v1/volumes/w/attachments/node-1/renew", "")
	c.refused(404, api.CodeNotFound, "POST", "/v1/volumes/w/attachments", `{"node":"node-1","mode":"rw"}`)
	c.must(204, "DELETE", "/v1/volumes/v/attachments/node-1", "", nil)
	c.refused(404, api.CodeNotFound, "DELETE", "/v1/volumes/v/attachments/node-1", "")
	c.must(200, "POST", "/v1/volumes/v/attachments", `{"node":"node-2","mode":"rw"}`, &g)
	if g.Generation != 2 {
		t.Fatalf("generation %d after a detach, want 2", g.Generation)
	}
	clk.Add(16e9) // node-2's lease lapses; node-1 takes over
	c.must(200, "POST", "/v1/volumes/v/attachments", `{"node":"node-1","mode":"ro"}`, &g)
	c.refused(404, api.CodeNotFound, "POST", "/v1/volumes/v/attachments/node-2/renew", "")
}

// The auth scheme is case-insensitive (RFC 7235, section 2.1); the token
// is not.
func TestAPIBearerSchemeAnyCase(t *testing.T) {
	c, _, _ := newAPI(t)
	for header, want := range map[string]int{
		"Bearer " + testToken:                  200,
		"bearer " + testToken:                  200,
		"BEARER " + testToken:                  200,
		"bEaReR  " + testToken:                 200,
		"bearer " + strings.ToUpper(testToken): 401,
		"bearer" + testToken:                   401,
		"Bearerx " + testToken:                 401,
		"Basic " + testToken:                   401,
		testToken:                              401,
	} {
		req, _ := http.NewRequest("GET", c.url+"/v1/volumes", nil)
		req.Header.Set("Authorization", header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Authorization: %q: %d, want %d", header, resp.StatusCode, want)
		}
	}
}
