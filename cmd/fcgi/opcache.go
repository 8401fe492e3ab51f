package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fcgikit/fcgi"
	"github.com/prometheus/client_golang/prometheus"
)

var opcacheCmd = &command{
	name:    "opcache",
	summary: "read or reset a PHP-FPM pool's OPcache (for deploy hooks)",
	usage: `
Usage: fcgi opcache status|reset [flags] --backend ADDR

Opcache runs a small PHP script through the pool at --backend to read
its OPcache (opcache_get_status) or to empty it (opcache_reset), as a
deploy that swaps release directories needs: OPcache keys scripts by
their resolved path and may keep serving the old release. status prints
the figures (--json: as PHP gives them); reset asks PHP to empty the
cache, which it does once no worker is using it, and prints the figures
before the reset. The pools of one PHP-FPM master share one OPcache.

The script is written to --dir, run, and removed. PHP-FPM's workers must
read it at that same path: under systemd's PrivateTmp=yes (Debian's and
Red Hat's php-fpm units) PHP-FPM has a /tmp of its own, so use a
directory outside /tmp that both see, such as /run/fcgi; with
open_basedir, a directory it allows. In Kubernetes, an emptyDir mounted
at the same path in both containers.

Examples:

	fcgi opcache status --backend unix:/run/php/php8.2-fpm.sock --dir /run/fcgi
	fcgi opcache reset --backend 127.0.0.1:9000 --dir /var/www/shared

Exit status: 0 done, 1 OPcache absent, disabled or restricted
(opcache.restrict_api), or the script not found by the pool, 3 dead
(unreachable), 4 protocol error, 5 busy (no answer in time).
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		backend := fs.String("backend", "", "the pool's `address`")
		dir := fs.String("dir", os.TempDir(), "`directory` for the script: the pool's workers must read it there")
		asJSON := fs.Bool("json", false, "print opcache_get_status()'s answer as JSON")
		timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 || (args[0] != "status" && args[0] != "reset") {
				return usageError(e, fs, "want status or reset")
			}
			if *backend == "" {
				return usageError(e, fs, "want --backend ADDR")
			}
			if _, _, err := parseAddr(*backend); err != nil {
				return usageError(e, fs, "--backend: %v", err)
			}
			c := newClient(e, *backend, *timeout)
			defer c.Close()
			s := &opcacheScript{dir: *dir, name: "fcgi-opcache"}
			if err := s.acquire(); err != nil {
				return err
			}
			defer s.release()
			ctx, cancel := context.WithTimeout(ctx, *timeout)
			defer cancel()
			reset := args[0] == "reset"
			st, err := s.run(ctx, c, reset)
			var fe *fetchError
			switch {
			case errors.As(err, &fe):
				return clientError(fe.err)
			case err != nil:
				return &exitError{code: exitFail, err: err}
			case !st.Status.Enabled:
				return &exitError{code: exitFail, err: errOpcacheDisabled}
			}
			if *asJSON {
				e.stdout.Write(st.raw)
				fmt.Fprintln(e.stdout)
			} else {
				st.writeText(e.stdout)
			}
			if reset {
				fmt.Fprintln(e.stdout, "OPcache reset: PHP empties the cache once no worker is using it")
			}
			return nil
		}
	},
}

// opcacheScriptText is the PHP script that reads OPcache's figures, and
// resets the cache first when its query is "reset". The @ keeps a warning
// (opcache.restrict_api) out of the JSON; the message is sent in it.
const opcacheScriptText = `<?php
// fcgi (fcgikit) runs this file through the pool to read OPcache, then
// removes it.
header('Content-Type: application/json');
header('Cache-Control: no-store');
$out = ['loaded' => function_exists('opcache_get_status')];
if ($out['loaded']) {
    if (($_SERVER['QUERY_STRING'] ?? '') === 'reset') {
        $out['reset'] = @opcache_reset();
    }
    $st = @opcache_get_status(false);
    $out['status'] = $st === false ? null : $st;
    if ($st === false) {
        $out['error'] = error_get_last()['message'] ?? 'OPcache is disabled for this pool (opcache.enable)';
    }
}
echo json_encode($out);
`

// opcacheScript is the script file, written while a run needs it. Its
// name holds a hash of its text and its modification time is fixed, so
// that OPcache, which also caches it, finds the same file each time and
// keeps one entry for it rather than one per run.
type opcacheScript struct {
	dir string
	// name begins the file's name: the exporter's and fcgi opcache's
	// differ, so that one's removal cannot pull the file from under the
	// other's run in the same directory.
	name string

	mu    sync.Mutex
	users int
	path  string
}

// acquire writes the script unless a run in progress already has.
func (s *opcacheScript) acquire() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users > 0 {
		s.users++
		return nil
	}
	sum := sha256.Sum256([]byte(opcacheScriptText))
	path := filepath.Join(s.dir, s.name+"-"+hex.EncodeToString(sum[:4])+".php")
	f, err := os.CreateTemp(s.dir, ".fcgi-opcache-*")
	if err != nil {
		return err
	}
	_, err = io.WriteString(f, opcacheScriptText)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	// The pool's workers run as another user: they read it, nobody writes.
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		stamp := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
		err = os.Chtimes(f.Name(), stamp, stamp)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing the OPcache script in %s: %w", s.dir, err)
	}
	s.path = path
	s.users = 1
	return nil
}

// release removes the script once no run needs it.
func (s *opcacheScript) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users--; s.users == 0 {
		os.Remove(s.path)
	}
}

// run runs the script through c, resetting the cache first when reset is
// true. The client's errors are *fetchError; any other error says why
// the script gave no figures.
func (s *opcacheScript) run(ctx context.Context, c *fcgi.Client, reset bool) (*opcacheStatus, error) {
	target := "/" + filepath.Base(s.path)
	if reset {
		target += "?reset"
	}
	r, err := fetch(ctx, c, &requestParams{target: target, root: s.dir, ext: ".php", body: -1})
	if err != nil {
		return nil, err
	}
	if r.status != 200 {
		return nil, fmt.Errorf("the pool answered %d %q for %s: its workers must read the file at that path (a directory outside a private /tmp, within open_basedir)", r.status, truncate(r.body, 80), s.path)
	}
	st := &opcacheStatus{raw: r.body}
	if err := json.Unmarshal(r.body, st); err != nil {
		return nil, fmt.Errorf("the OPcache script's answer is not its JSON (%v): %q", err, truncate(r.body, 80))
	}
	switch {
	case !st.Loaded:
		return nil, errors.New("OPcache is not loaded in this pool (zend_extension=opcache)")
	case st.Reset != nil && !*st.Reset:
		// PHP refuses a reset of a disabled cache without a warning.
		why := st.Error
		if why == "" && st.Status != nil && !st.Status.Enabled {
			why = errOpcacheDisabled.Error()
		}
		return nil, fmt.Errorf("opcache_reset() refused: %s", cmp.Or(why, "PHP gave no reason"))
	case st.Status == nil:
		return nil, fmt.Errorf("no OPcache status: %s", st.Error)
	}
	return st, nil
}

// errOpcacheDisabled is fcgi opcache's failure for a pool whose OPcache
// is loaded but off: opcache_get_status still answers, with the figures
// of the master's shared cache, which this pool does not use.
var errOpcacheDisabled = errors.New("OPcache is disabled in this pool (opcache.enable=0)")

// opcacheStatus is the script's answer: opcache_get_status(false), the
// fields the metrics use.
type opcacheStatus struct {
	raw    []byte
	Loaded bool   `json:"loaded"`
	Reset  *bool  `json:"reset"`
	Error  string `json:"error"`
	Status *struct {
		Enabled        bool `json:"opcache_enabled"`
		CacheFull      bool `json:"cache_full"`
		RestartPending bool `json:"restart_pending"`
		Memory         struct {
			Used   float64 `json:"used_memory"`
			Free   float64 `json:"free_memory"`
			Wasted float64 `json:"wasted_memory"`
		} `json:"memory_usage"`
		Interned struct {
			Used    float64 `json:"used_memory"`
			Free    float64 `json:"free_memory"`
			Strings float64 `json:"number_of_strings"`
		} `json:"interned_strings_usage"`
		Stats struct {
			CachedScripts   float64 `json:"num_cached_scripts"`
			CachedKeys      float64 `json:"num_cached_keys"`
			MaxCachedKeys   float64 `json:"max_cached_keys"`
			Hits            float64 `json:"hits"`
			Misses          float64 `json:"misses"`
			HitRate         float64 `json:"opcache_hit_rate"`
			StartTime       float64 `json:"start_time"`
			LastRestartTime float64 `json:"last_restart_time"`
			OOMRestarts     float64 `json:"oom_restarts"`
			HashRestarts    float64 `json:"hash_restarts"`
			ManualRestarts  float64 `json:"manual_restarts"`
		} `json:"opcache_statistics"`
	} `json:"status"`
}

func (st *opcacheStatus) writeText(w io.Writer) {
	s := st.Status
	line := func(name string, v any) { fmt.Fprintf(w, "%-24s %v\n", name+":", v) }
	line("enabled", s.Enabled)
	line("cached scripts", int64(s.Stats.CachedScripts))
	line("cached keys", fmt.Sprintf("%d of %d", int64(s.Stats.CachedKeys), int64(s.Stats.MaxCachedKeys)))
	line("memory used", int64(s.Memory.Used))
	line("memory free", int64(s.Memory.Free))
	line("memory wasted", int64(s.Memory.Wasted))
	line("interned strings used", int64(s.Interned.Used))
	line("interned strings free", int64(s.Interned.Free))
	line("hits", int64(s.Stats.Hits))
	line("misses", int64(s.Stats.Misses))
	line("hit rate", fmt.Sprintf("%.2f%%", s.Stats.HitRate))
	line("restarts", fmt.Sprintf("oom %d, hash %d, manual %d", int64(s.Stats.OOMRestarts), int64(s.Stats.HashRestarts), int64(s.Stats.ManualRestarts)))
	line("cache full", s.CacheFull)
	line("restart pending", s.RestartPending)
	if s.Stats.StartTime > 0 {
		line("start time", time.Unix(int64(s.Stats.StartTime), 0).UTC().Format(time.RFC3339))
	}
	if s.Stats.LastRestartTime > 0 {
		line("last restart", time.Unix(int64(s.Stats.LastRestartTime), 0).UTC().Format(time.RFC3339))
	}
}

// The OPcache metrics of fcgi exporter --opcache, by pool.
var (
	descOpcacheUp             = poolDesc("phpfpm_opcache_up", "1 when the OPcache script ran through the pool and OPcache answered, else 0 (see the exporter's log).")
	descOpcacheEnabled        = poolDesc("phpfpm_opcache_enabled", "1 when OPcache is enabled.")
	descOpcacheCacheFull      = poolDesc("phpfpm_opcache_cache_full", "1 when OPcache's memory or keys are used up.")
	descOpcacheRestartPending = poolDesc("phpfpm_opcache_restart_pending", "1 while a restart (a reset) waits for the workers to stop using the cache.")
	descOpcacheMemUsed        = poolDesc("phpfpm_opcache_memory_used_bytes", "OPcache's shared memory in use.")
	descOpcacheMemFree        = poolDesc("phpfpm_opcache_memory_free_bytes", "OPcache's shared memory free.")
	descOpcacheMemWasted      = poolDesc("phpfpm_opcache_memory_wasted_bytes", "OPcache's shared memory held by scripts since changed or invalidated, freed at the next restart.")
	descOpcacheStrUsed        = poolDesc("phpfpm_opcache_interned_strings_used_bytes", "OPcache's interned strings buffer in use.")
	descOpcacheStrFree        = poolDesc("phpfpm_opcache_interned_strings_free_bytes", "OPcache's interned strings buffer free.")
	descOpcacheScripts        = poolDesc("phpfpm_opcache_cached_scripts", "Scripts in OPcache (the exporter's own script among them).")
	descOpcacheKeys           = poolDesc("phpfpm_opcache_cached_keys", "Keys in OPcache's hash table.")
	descOpcacheMaxKeys        = poolDesc("phpfpm_opcache_max_cached_keys", "The most keys OPcache's hash table holds (opcache.max_accelerated_files, rounded up).")
	descOpcacheHits           = poolDesc("phpfpm_opcache_hits_total", "Scripts served from OPcache since its last restart.")
	descOpcacheMisses         = poolDesc("phpfpm_opcache_misses_total", "Scripts compiled because OPcache did not hold them, since its last restart.")
	descOpcacheHitRatio       = poolDesc("phpfpm_opcache_hit_ratio", "Hits over hits and misses since OPcache's last restart, from 0 to 1.")
	descOpcacheRestarts       = poolDesc("phpfpm_opcache_restarts_total", "OPcache's restarts by reason: oom (memory full), hash (keys full), manual (opcache_reset).", "reason")
	descOpcacheStart          = poolDesc("phpfpm_opcache_start_time_seconds", "When OPcache started, in seconds since the Unix epoch.")
	descOpcacheLastRestart    = poolDesc("phpfpm_opcache_last_restart_time_seconds", "When OPcache last restarted, in seconds since the Unix epoch; 0 for never.")
)

func describeOpcache(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOpcacheUp, descOpcacheEnabled, descOpcacheCacheFull, descOpcacheRestartPending,
		descOpcacheMemUsed, descOpcacheMemFree, descOpcacheMemWasted, descOpcacheStrUsed, descOpcacheStrFree,
		descOpcacheScripts, descOpcacheKeys, descOpcacheMaxKeys, descOpcacheHits, descOpcacheMisses,
		descOpcacheHitRatio, descOpcacheRestarts, descOpcacheStart, descOpcacheLastRestart} {
		ch <- d
	}
}

// collectOpcache sends the OPcache metrics of one pool's scrape.
func collectOpcache(ch chan<- prometheus.Metric, ps *poolScrape, pool, uri string) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append(append([]string{pool}, labels...), uri)...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, append(append([]string{pool}, labels...), uri)...)
	}
	if ps.opcache == nil {
		gauge(descOpcacheUp, 0)
		return
	}
	s := ps.opcache.Status
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	gauge(descOpcacheUp, 1)
	gauge(descOpcacheEnabled, b(s.Enabled))
	gauge(descOpcacheCacheFull, b(s.CacheFull))
	gauge(descOpcacheRestartPending, b(s.RestartPending))
	gauge(descOpcacheMemUsed, s.Memory.Used)
	gauge(descOpcacheMemFree, s.Memory.Free)
	gauge(descOpcacheMemWasted, s.Memory.Wasted)
	gauge(descOpcacheStrUsed, s.Interned.Used)
	gauge(descOpcacheStrFree, s.Interned.Free)
	gauge(descOpcacheScripts, s.Stats.CachedScripts)
	gauge(descOpcacheKeys, s.Stats.CachedKeys)
	gauge(descOpcacheMaxKeys, s.Stats.MaxCachedKeys)
	counter(descOpcacheHits, s.Stats.Hits)
	counter(descOpcacheMisses, s.Stats.Misses)
	gauge(descOpcacheHitRatio, s.Stats.HitRate/100)
	counter(descOpcacheRestarts, s.Stats.OOMRestarts, "oom")
	counter(descOpcacheRestarts, s.Stats.HashRestarts, "hash")
	counter(descOpcacheRestarts, s.Stats.ManualRestarts, "manual")
	gauge(descOpcacheStart, s.Stats.StartTime)
	gauge(descOpcacheLastRestart, s.Stats.LastRestartTime)
}
