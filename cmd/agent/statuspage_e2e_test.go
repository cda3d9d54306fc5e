package main

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/vramseal/vramseal/internal/testenv"
)

// hostileRef is a model reference (user input) that would run a script if
// the page did not escape it.
const hostileRef = `<script>document.title='pwned'</script><b>bold`

// statusNode starts the agent on two simulated GPUs with four shards, one of
// them corrupted (and so failed) and ECC errors on GPU 1: what an operator
// wants to spot on the page.
func statusNode(t *testing.T, extra string) *env {
	t.Helper()
	e := newEnv(t)
	e.shardFile("a.bin", 3<<20, 1)
	e.shardFile("b.bin", 2<<20, 2)
	e.shardFile("c.bin", 5<<20, 3)
	e.shardFile("d.bin", 1<<20, 4)
	e.verify = "{interval: 30s, jitter: 0.1}"
	// Small GPUs, so that the shards show on the memory bars.
	e.writeConfigWith("sim", "sim: {gpus: 2, memory_bytes: 33554432}\npolicy: {min_memory_bytes: 0}\n"+extra,
		"llama-00001:a.bin:0:meta-llama/Llama-3.1-8B@main", "llama-00002:b.bin:0:meta-llama/Llama-3.1-8B@main",
		"llama-00003:c.bin:1:"+hostileRef, "mistral-00001:d.bin:1:mistralai/Mistral-7B@v0.3")
	e.start()
	e.waitFor("/readyz 200", func() bool { code, _ := e.get("/readyz"); return code == 200 })
	return e
}

// TestStatusPageInChromium renders the agent's status page in Debian's
// headless Chromium: the text a person reads (--dump-dom) and a screenshot
// checked to be non-blank.
// VRAMSEAL_STATUS_SCREENSHOT=/abs/path.png keeps the screenshot (the
// README's docs/img/status.png is made so).
func TestStatusPageInChromium(t *testing.T) {
	chromium := testenv.Tool(t, "VRAMSEAL_CHROMIUM")
	if _, err := os.Stat(chromium); err != nil {
		testenv.Missing(t, "chromium: %v (`make test` installs Debian's chromium)", err)
	}
	e := statusNode(t, "")
	e.mustCLI(0, "verify", "--all")
	e.mustCLI(0, "debug", "corrupt", "llama-00002", "--offset", "1000")
	e.mustCLI(1, "verify", "llama-00002")
	e.mustCLI(0, "debug", "ecc", "1", "--correctable", "3", "--uncorrectable", "1")
	e.waitFor("the page to show the ECC errors", func() bool {
		_, body := e.get("/")
		return strings.Contains(body, "ECC corrected 3")
	})
	url := "http://" + e.addr + "/"

	dom := runChromium(t, chromium, "--dump-dom", url)
	for _, want := range []string{
		"SIMULATED", "worker <b>e2e-node</b>", "GPUs", "Shards", "Audit pipeline", "Recent audit events",
		"llama-00001", "llama-00002", "mistral-00001", "meta-llama/Llama-3.1-8B@main", "failed", "digest_mismatch",
		"ECC corrected 3", "vramseal.seal.verification_failed", "vramseal.vram.sealed",
		`<a href="/metrics">Metrics</a>`, `<a href="/healthz">Health</a>`, `<a href="/readyz">Readiness</a>`,
		"&lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;b&gt;bold",
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered page lacks %q", want)
		}
	}
	if strings.Contains(dom, "<script") || strings.Contains(dom, "pwned</title>") || strings.Contains(dom, "<b>bold") {
		t.Error("the hostile model reference became markup")
	}

	shot := filepath.Join(t.TempDir(), "status.png")
	// The page works without JavaScript: it has no script, and its
	// Content-Security-Policy allows none, so Chromium runs none here.
	runChromium(t, chromium, "--hide-scrollbars", "--window-size=1280,900", "--screenshot="+shot, url)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	colours, top := colourCount(img)
	b := img.Bounds()
	t.Logf("screenshot %dx%d: %d distinct colours, the most common covers %.1f%%", b.Dx(), b.Dy(), colours, 100*top)
	if b.Dx() != 1280 || b.Dy() != 900 {
		t.Errorf("screenshot is %dx%d, want 1280x900", b.Dx(), b.Dy())
	}
	if colours < 16 || top > 0.97 {
		t.Errorf("screenshot looks blank: %d colours, one covers %.1f%%", colours, 100*top)
	}
	if keep := os.Getenv("VRAMSEAL_STATUS_SCREENSHOT"); keep != "" {
		data, err := os.ReadFile(shot)
		if err == nil {
			err = os.WriteFile(keep, data, 0o644)
		}
		if err != nil {
			t.Errorf("keeping the screenshot: %v", err)
		}
	}
}

// runChromium runs headless Chromium with a profile of its own and returns
// its standard output.
func runChromium(t *testing.T, chromium string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--no-default-browser-check", "--disable-extensions", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, chromium, append(base, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// colourCount returns how many distinct colours img has and the share of
// its pixels the most common one covers.
func colourCount(img image.Image) (int, float64) {
	counts := map[[4]uint32]int{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			counts[[4]uint32{r, g, bl, a}]++
		}
	}
	top := 0
	for _, n := range counts {
		top = max(top, n)
	}
	return len(counts), float64(top) / float64(b.Dx()*b.Dy())
}

// TestStatusPageBehindBasicAuth: the page is served by the same handler
// chain as /metrics, so --web.config.file's basic auth guards it too; and
// web.status_page: off leaves only the links.
func TestStatusPageBehindBasicAuth(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	webConfig := filepath.Join(e.dir, "web.yml")
	if err := os.WriteFile(webConfig, fmt.Appendf(nil, "basic_auth_users:\n  ops: %s\n", hash), 0o600); err != nil {
		t.Fatal(err)
	}
	e.shardFile("a.bin", 1<<20, 1)
	e.writeConfigWith("sim", "sim: {gpus: 1, memory_bytes: 4294967296}\nweb: {status_page: off}\n", "a:a.bin:0")
	e.start("--web.config.file", webConfig)
	get := func(user, pass string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+e.addr+"/", nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	e.waitFor("the web port", func() bool { code, _ := get("", ""); return code != 0 })
	if code, _ := get("", ""); code != http.StatusUnauthorized {
		t.Errorf("/ without credentials: %d, want 401", code)
	}
	if code, _ := get("ops", "wrong"); code != http.StatusUnauthorized {
		t.Errorf("/ with a wrong password: %d, want 401", code)
	}
	code, body := get("ops", "s3cret")
	if code != 200 || !strings.Contains(body, "web.status_page: off") || !strings.Contains(body, `<a href="/metrics">`) {
		t.Errorf("/ with credentials: %d\n%s", code, body)
	}
	if strings.Contains(body, "<section") {
		t.Error("web.status_page: off still shows the agent's state")
	}
}
