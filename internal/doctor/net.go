package doctor

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/netvol/netvol/blockvol"
	"github.com/netvol/netvol/internal/opcmd"
	"github.com/netvol/netvol/server/api"
)

// The doctor's checks of the servers, Docker and the plugin.

// maxSkew is the clock difference with the storage daemon that is warned
// about.
const maxSkew = 5 * time.Second

// healthProbe is what GET /healthz told.
type healthProbe struct {
	result     Result
	health     api.Health
	date       string    // the Date header
	sent, recv time.Time // local clock around the call
	err        error
}

// daemonChecks: the storage daemon answers, its clock, the token, and its
// NBD address.
func (d *doctor) daemonChecks(ctx context.Context) []Result {
	if d.cfg.Conn.Server == "" {
		return nil
	}
	servers, err := d.cfg.Conn.Servers()
	if err != nil {
		return []Result{problem(StatusFail, "storage daemon", err.Error(), "give --server host:port, or a pool: host:port,host:port,... (NETVOL_SERVER)")}
	}
	if len(servers) == 1 {
		return d.daemonChecksOf(ctx)
	}
	return d.poolChecks(ctx, servers)
}

// poolChecks runs the checks of one storage daemon on every server of a
// pool at once, each with its token, naming the server in each check.
func (d *doctor) poolChecks(ctx context.Context, servers []string) []Result {
	clients, err := d.cfg.Conn.APIClients()
	if err != nil {
		return []Result{problem(StatusFail, "api token", err.Error(), tokenFix)}
	}
	results := make([][]Result, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		wg.Go(func() {
			sub := &doctor{cfg: d.cfg}
			sub.cfg.Conn.Server, sub.cfg.Conn.Token, sub.cfg.Conn.TokenFile = srv, clients[i].Token(), ""
			for _, r := range sub.daemonChecksOf(ctx) {
				r.Check += " " + clients[i].Server()
				results[i] = append(results[i], r)
			}
		})
	}
	wg.Wait()
	return slices.Concat(results...)
}

// daemonChecksOf checks the one storage daemon of d.cfg.Conn.Server.
func (d *doctor) daemonChecksOf(ctx context.Context) []Result {
	api, err := api.New(d.cfg.Conn.Server, "", nil)
	if err != nil {
		return []Result{problem(StatusFail, "storage daemon", err.Error(), "give --server host:port or http(s)://host:port (NETVOL_SERVER)")}
	}
	late := healthProbe{err: errors.New("timed out"), result: problem(StatusFail, "storage daemon",
		fmt.Sprintf("%s: no answer to GET /healthz within %s", api.URL(), d.cfg.Timeout), daemonFix)}
	hp := bounded(ctx, d.cfg.Timeout, func(ctx context.Context) healthProbe { return d.healthz(ctx, api.URL()) }, late)
	out := []Result{hp.result}
	if hp.err == nil {
		out = append(out, d.clockCheck(hp))
	}
	tok := d.check(ctx, "api token", func(ctx context.Context) Result { return d.tokenCheck(ctx, hp.err == nil) })
	nbdAddr := d.check(ctx, "nbd address", func(ctx context.Context) Result { return d.nbdAddrCheck(ctx, api.Server(), hp) })
	return append(out, tok, nbdAddr)
}

const daemonFix = "check that netvol server runs there and listens on that address (--api-listen; its default, 127.0.0.1:10810, is loopback only) and that no firewall blocks the port"

func (d *doctor) healthz(ctx context.Context, base string) healthProbe {
	const name = "storage daemon"
	p := healthProbe{sent: d.cfg.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
	if err == nil {
		var resp *http.Response
		if resp, err = http.DefaultClient.Do(req); err == nil {
			p.recv, p.date = d.cfg.Now(), resp.Header.Get("Date")
			err = decodeHealth(resp, &p.health)
		}
	}
	if p.err = err; err != nil {
		fix := daemonFix
		var certErr *tls.CertificateVerificationError
		if errors.As(err, &certErr) {
			fix = "this host does not trust the daemon's certificate: add its CA to the system's trust store (/usr/local/share/ca-certificates, update-ca-certificates)"
		}
		p.result = problem(StatusFail, name, fmt.Sprintf("%s does not answer GET /healthz as a netvol storage daemon: %v", base, err), fix)
		return p
	}
	p.result = passed(name, fmt.Sprintf("%s is healthy; it serves NBD at %s", base, opcmd.OrDash(p.health.NBD)))
	return p
}

func decodeHealth(resp *http.Response, h *api.Health) error {
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(h); err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if h.Status != "ok" {
		return fmt.Errorf("health status %q", h.Status)
	}
	return nil
}

// clockCheck compares the daemon's Date header with the local clock at
// the middle of the call. Date has whole seconds: half a second is added.
func (d *doctor) clockCheck(p healthProbe) Result {
	const name = "clock"
	t, err := http.ParseTime(p.date)
	if err != nil {
		return problem(StatusWarn, name, "the storage daemon sent no usable Date header; clock skew not checked", "a proxy in front of the daemon may drop it: compare the clocks by hand (date -u on both)")
	}
	skew := t.Add(500 * time.Millisecond).Sub(p.sent.Add(p.recv.Sub(p.sent) / 2)).Round(time.Second)
	side := "ahead of"
	if skew < 0 {
		skew, side = -skew, "behind"
	}
	if skew > maxSkew {
		return problem(StatusWarn, name, fmt.Sprintf("the storage daemon's clock is %s %s this host's", skew, side),
			"keep clocks in sync with NTP (chrony, systemd-timesyncd): lease expiries the daemon reports, logs and TLS certificates depend on it")
	}
	if skew == 0 {
		return passed(name, "the storage daemon's clock agrees with this host's (to the second)")
	}
	return passed(name, fmt.Sprintf("the storage daemon's clock is %s %s this host's (up to %s is fine)", skew, side, maxSkew))
}

const tokenFix = "copy the token file of the storage node (<data>/token) to this host and give it with --token-file (NETVOL_TOKEN_FILE)"

// tokenCheck: a token is given and the daemon accepts it (asked only when
// the daemon answers).
func (d *doctor) tokenCheck(ctx context.Context, reachable bool) Result {
	const name = "api token"
	tok, err := d.cfg.Conn.APIToken()
	if err != nil {
		return problem(StatusFail, name, err.Error(), tokenFix)
	}
	if !reachable {
		return problem(StatusWarn, name, "given, but not checked: the storage daemon does not answer", "see storage daemon")
	}
	c, err := api.New(d.cfg.Conn.Server, tok, nil)
	if err != nil {
		return problem(StatusFail, name, err.Error(), tokenFix)
	}
	vols, err := c.ListVolumes(ctx)
	switch {
	case errors.Is(err, api.ErrUnauthorized):
		return problem(StatusFail, name, "the storage daemon refuses the token: "+err.Error(), tokenFix)
	case err != nil:
		return problem(StatusWarn, name, "not checked: GET /v1/volumes failed: "+err.Error(), "see storage daemon")
	}
	return passed(name, fmt.Sprintf("accepted (GET /v1/volumes: %d volumes)", len(vols)))
}

const nbdFix = "the daemon's --nbd-listen must be reachable from this host (its default, 127.0.0.1:10809, is loopback only): listen on an address this host reaches, open the port in firewalls, or give the address with --nbd (NETVOL_NBD)"

// nbdAddrCheck connects to the NBD server where the plugin would: --nbd,
// else the API's host and the port the daemon reports.
func (d *doctor) nbdAddrCheck(ctx context.Context, apiServer string, hp healthProbe) Result {
	const name = "nbd address"
	addr, how := d.cfg.Conn.NBDAddr, "--nbd"
	if addr == "" {
		if hp.err != nil {
			return problem(StatusWarn, name, "not checked: the storage daemon did not say where it serves NBD", "see storage daemon")
		}
		var err error
		if addr, err = blockvol.DeriveNBDAddr(apiServer, hp.health.NBD); err != nil {
			return problem(StatusFail, name, err.Error(), nbdFix)
		}
		how = "the API's host and the port the daemon reports"
	}
	network, a := "tcp", addr
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, a = "unix", p
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, network, a)
	if err != nil {
		return problem(StatusFail, name, fmt.Sprintf("cannot connect to the NBD server at %s (%s): %v", addr, how, err), nbdFix)
	}
	conn.Close()
	return passed(name, fmt.Sprintf("the NBD server at %s accepts connections (%s)", addr, how))
}

// nfsServerChecks: the export answers the nfs backend's List.
func (d *doctor) nfsServerChecks(ctx context.Context) []Result {
	if d.cfg.Conn.NFS == "" {
		return nil
	}
	return []Result{d.check(ctx, "nfs server", d.nfsServerCheck)}
}

func (d *doctor) nfsServerCheck(ctx context.Context) Result {
	const name = "nfs server"
	b, err := d.cfg.Conn.NFSBackend(d.cfg.Timeout)
	if err != nil {
		return problem(StatusFail, name, err.Error(), "give --nfs host:/export (NETVOL_NFS)")
	}
	vols, err := b.List(ctx)
	if err != nil {
		return problem(StatusFail, name, err.Error(), "check that the server exports "+d.cfg.Conn.NFS+" to this host over NFSv3 and TCP (netvol manages volume directories over NFSv3), "+
			"that its portmapper (port 111) answers or --nfs-port and --nfs-mount-port (NETVOL_NFS_PORT, NETVOL_NFS_MOUNT_PORT) give its ports, "+
			"and run as root: servers may want a reserved source port (the 'secure' export option)")
	}
	return passed(name, fmt.Sprintf("%s answers over NFSv3: %d volumes", d.cfg.Conn.NFS, len(vols)))
}

// dockerChecks: the Docker daemon and the plugin's socket.
func (d *doctor) dockerChecks(ctx context.Context) []Result {
	return []Result{d.check(ctx, "docker", d.dockerCheck), d.check(ctx, "plugin socket", d.pluginCheck)}
}

func (d *doctor) dockerCheck(ctx context.Context) Result {
	const name = "docker"
	network, addr, err := dockerEndpoint(d.cfg.DockerHost)
	if err != nil {
		return problem(StatusWarn, name, err.Error()+"; not checked", "give --docker-host unix:///run/docker.sock (or DOCKER_HOST) where dockerd listens")
	}
	if missing(network, addr) {
		return problem(StatusWarn, name, "no Docker daemon socket at "+addr+": Docker does not run on this host",
			"fine on a storage node; on a Docker host start dockerd (systemctl start docker)")
	}
	resp, err := socketCall(ctx, network, addr, http.MethodGet, "/_ping")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
	}
	if err != nil {
		return problem(StatusFail, name, fmt.Sprintf("Docker at %s does not answer GET /_ping: %v", d.cfg.DockerHost, err),
			"is dockerd running (systemctl status docker)? Its socket needs root or the docker group")
	}
	return passed(name, fmt.Sprintf("Docker answers GET /_ping at %s (API %s)", d.cfg.DockerHost, opcmd.OrDash(resp.Header.Get("Api-Version"))))
}

// missing says whether a unix socket's file is missing.
func missing(network, addr string) bool {
	if network != "unix" {
		return false
	}
	_, err := os.Stat(addr)
	return err != nil
}

// dockerEndpoint splits DOCKER_HOST: unix:///path or tcp://host:port.
func dockerEndpoint(host string) (network, addr string, err error) {
	if p, ok := strings.CutPrefix(host, "unix://"); ok && p != "" {
		return "unix", p, nil
	}
	if a, ok := strings.CutPrefix(host, "tcp://"); ok && a != "" {
		return "tcp", a, nil
	}
	return "", "", fmt.Errorf("--docker-host %q (DOCKER_HOST): want unix:///path or tcp://host:port", host)
}

// socketCall makes one HTTP call to a server on a socket.
func socketCall(ctx context.Context, network, addr, method, path string) (*http.Response, error) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	req, err := http.NewRequestWithContext(ctx, method, "http://netvol-doctor"+path, nil)
	if err != nil {
		return nil, err
	}
	return (&http.Client{Transport: tr}).Do(req)
}

// pluginCheck: the plugin answers Plugin.Activate on its socket (--socket,
// else a managed plugin's, in a directory of its own beside it).
func (d *doctor) pluginCheck(ctx context.Context) Result {
	const name = "plugin socket"
	path := d.pluginSocket()
	if path == "" {
		return problem(StatusWarn, name, "no plugin socket at "+d.cfg.Socket+": the netvol plugin does not run on this host",
			"start it (netvol plugin, or netvol run on a single host), or enable the managed plugin (docker plugin enable netvol)")
	}
	resp, err := socketCall(ctx, "unix", path, http.MethodPost, "/Plugin.Activate")
	var act struct{ Implements []string }
	if err == nil {
		err = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&act)
		resp.Body.Close()
	}
	if err == nil && !slices.Contains(act.Implements, "VolumeDriver") {
		err = fmt.Errorf("it implements %v, not VolumeDriver", act.Implements)
	}
	if err != nil {
		return problem(StatusFail, name, fmt.Sprintf("%s does not answer Plugin.Activate: %v", path, err),
			"a plugin that stopped uncleanly leaves its socket behind: restart the plugin (it removes a stale socket when it starts)")
	}
	return passed(name, fmt.Sprintf("the plugin answers on %s (VolumeDriver)", path))
}

// pluginSocket is --socket when it exists, else a managed plugin's socket
// of the same name one directory down (/run/docker/plugins/<id>/netvol.sock).
func (d *doctor) pluginSocket() string {
	if _, err := os.Stat(d.cfg.Socket); err == nil {
		return d.cfg.Socket
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(d.cfg.Socket), "*", filepath.Base(d.cfg.Socket)))
	if len(matches) > 0 {
		return matches[0]
	}
	return ""
}
