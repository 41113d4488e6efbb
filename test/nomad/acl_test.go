package nomadtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/jobs"
	"github.com/thawhq/thaw/test/e2e"
)

// thawPolicy is the least-privilege ACL policy the README documents for
// thaw server's Nomad token (section "Production: thaw on a Nomad GPU
// cluster"); TestACL applies it and checks the README shows this one.
const thawPolicy = `namespace "default" {
  capabilities = ["list-jobs", "read-job", "submit-job"]
  variables {
    path "thaw/records/*" {
      capabilities = ["list", "read", "write", "destroy"]
    }
    path "thaw/names/*" {
      capabilities = ["read", "write", "destroy"]
    }
    path "nomad/jobs/thaw-*" {
      capabilities = ["write", "destroy"]
    }
    path "thaw/leader" {
      capabilities = ["read", "write"]
    }
  }
}
node {
  policy = "read"
}
`

// hfToken is the HF token TestACL's deployments are created with
// (server.create).
const hfToken = "hf_e2e_secret"

// TestACL: with Nomad's ACLs enabled, thaw server runs on a token holding
// only the README's policy (no management token): a deployment with an HF
// token is created, placed, serves, scales to zero and is deleted; its
// task gets HF_TOKEN through its workload identity with no policy attached
// to the job; the GPU inventory is readable. With submit-job taken out of
// the policy, thaw keeps serving its API and the deployment says what the
// token lacks.
func TestACL(t *testing.T) {
	agent, mgmt := startACLAgent(t, h100+":2")
	anon, err := api.NewClient(&api.Config{Address: agent.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := anon.Jobs().List(nil); err == nil {
		t.Fatal("the agent lists jobs without a token: ACLs are not enforced")
	}

	t.Run("README policy", func(t *testing.T) {
		s := startServer(t, serverOpts{nomadAddr: agent.URL, idleTimeout: 3 * time.Second,
			args: []string{"--nomad-token", aclToken(t, mgmt, "thaw", thawPolicy)}})
		aclLifecycle(t, s, mgmt, agent)
		for _, bad := range []string{"Permission denied", "Nomad refuses thaw's ACL token", "Nomad does not know thaw's ACL token"} {
			if out := s.th.Out.String(); strings.Contains(out, bad) {
				t.Errorf("thaw server's log says %q with the README's policy:\n%s", bad, e2e.TailLines(out, 20))
			}
		}
	})

	t.Run("missing capability", func(t *testing.T) {
		policy := strings.Replace(thawPolicy, `, "submit-job"`, "", 1)
		s := startServer(t, serverOpts{nomadAddr: agent.URL,
			args: []string{"--nomad-token", aclToken(t, mgmt, "thaw-no-submit", policy)}})
		d := s.create(uniqueName("acl-refused"), "H100-80GB", 1, 2, 1, 1)
		want := `Nomad refuses thaw's ACL token: its policy needs namespace capability "submit-job"`
		got := s.waitDeploy(d.ID, 30*time.Second, "saying what the token lacks", func(d deploy.View) bool {
			return strings.Contains(d.Instances.Reason, want)
		})
		t.Logf("refused: %s", describe(got))
		if got.Instances.Running != 0 || got.Status == deploy.StatusRunning {
			t.Errorf("deployment %s with submit-job refused", describe(got))
		}
		// The API keeps serving, and says Nomad refuses it (not that it
		// is unreachable); the grant it lacks is only in the log.
		if r, err := s.do("GET", "/healthz", nil); err != nil || r.Status != 200 || !strings.Contains(string(r.Body), `"nomad":"refused"`) {
			t.Errorf("thaw server's /healthz after Nomad refused it: %v %s %v", r.Status, r.Body, err)
		}
		if out := s.th.Out.String(); !strings.Contains(out, "Nomad refuses thaw's ACL token") || !strings.Contains(out, "submit-job") {
			t.Errorf("thaw server's log does not name the missing capability:\n%s", s.th.Out.TailLines(20))
		}
		s.delete(d.ID)
	})

	t.Run("README shows the policy", func(t *testing.T) {
		readme, err := os.ReadFile(filepath.Join(root, "README.md"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(squash(string(readme)), squash(thawPolicy)) {
			t.Errorf("README.md does not show the ACL policy TestACL tried:\n%s", thawPolicy)
		}
	})
}

// aclLifecycle drives one deployment with an HF token from creation to
// deletion through s, checking with the management client mgmt what Nomad
// holds at each step.
func aclLifecycle(t *testing.T, s *server, mgmt *api.Client, agent *e2e.Nomad) {
	t0 := time.Now()
	d := s.create(uniqueName("acl"), "H100-80GB", 1, 2, 1, 1)
	s.waitDeploy(d.ID, 60*time.Second, "running", func(d deploy.View) bool { return d.Instances.Running == 1 })
	t.Logf("created and running after %v", time.Since(t0).Round(time.Millisecond))
	if msg := checkChat(s.chat(d.FullName, 5)); msg != "" {
		t.Errorf("chat: %s", msg)
	}

	// The token is in the job's own Variable, which the task read by its
	// workload identity: no policy names the job, none is attached to it.
	v, _, err := mgmt.Variables().Read(jobs.VariablePath(d.ID), nil)
	if err != nil || v.Items[jobs.HFTokenKey] != hfToken {
		t.Errorf("Variable %s: %v (%v), want item %s = the deployment's token", jobs.VariablePath(d.ID), v, err, jobs.HFTokenKey)
	}
	policies, _, err := mgmt.ACLPolicies().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range policies {
		if full, _, err := mgmt.ACLPolicies().Info(p.Name, nil); err != nil || full.JobACL != nil {
			t.Errorf("policy %s is attached to a job (%+v, %v): the task should need none", p.Name, full.JobACL, err)
		}
	}
	job, _, err := mgmt.Jobs().Info(jobOf(d), nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(jobString(job), hfToken) {
		t.Errorf("the HF token shows in the job")
	}
	if env := taskEnv(t, agent, d.FullName); !bytes.Contains(env, []byte("\x00HF_TOKEN="+hfToken+"\x00")) {
		t.Errorf("the model server's environment has no HF_TOKEN=%s", hfToken)
	} else {
		t.Logf("the model server's environment has HF_TOKEN=%s", hfToken)
	}

	// node read: GET /gpus counts the agent's GPUs, not just the prices.
	var gpus struct {
		GPUs []struct {
			GPU   string `json:"gpu"`
			Total *int   `json:"total"`
		} `json:"gpus"`
	}
	s.getJSON("/gpus", &gpus)
	if len(gpus.GPUs) != 1 || gpus.GPUs[0].Total == nil || *gpus.GPUs[0].Total != 2 {
		t.Errorf("GET /gpus: %+v, want the agent's 2 GPUs counted", gpus.GPUs)
	} else {
		t.Logf("GET /gpus: %s x %d", gpus.GPUs[0].GPU, *gpus.GPUs[0].Total)
	}

	// Scale to zero after the idle timeout: the job stops.
	if _, err := s.api().Update(context.Background(), d.ID, deploy.Settings{MinInstances: 0, MaxInstances: 1}); err != nil {
		t.Fatal(err)
	}
	s.waitDeploy(d.ID, 30*time.Second, "at zero", func(d deploy.View) bool {
		return d.Instances.Running == 0 && d.Instances.Desired == 0
	})
	if !waitFor(15*time.Second, 200*time.Millisecond, func() bool {
		j, _, err := mgmt.Jobs().Info(jobOf(d), nil)
		return err == nil && j.Stop != nil && *j.Stop
	}) {
		t.Errorf("job %s not stopped at zero instances", jobOf(d))
	}
	t.Logf("at zero, job stopped, %v after the create", time.Since(t0).Round(time.Millisecond))

	// Deleted: the job purged, the Variable gone.
	s.delete(d.ID)
	if !waitFor(30*time.Second, 200*time.Millisecond, func() bool {
		_, _, jerr := mgmt.Jobs().Info(jobOf(d), nil)
		v, _, _ := mgmt.Variables().Peek(jobs.VariablePath(d.ID), nil)
		return jerr != nil && v == nil
	}) {
		t.Errorf("job %s or its Variable still in Nomad after the delete", jobOf(d))
	}
}

// aclToken applies policy under name and returns the secret ID of a new
// client token holding only it.
func aclToken(t *testing.T, mgmt *api.Client, name, policy string) string {
	t.Helper()
	if _, err := mgmt.ACLPolicies().Upsert(&api.ACLPolicy{Name: name, Rules: policy}, nil); err != nil {
		t.Fatalf("apply policy %s: %v", name, err)
	}
	tok, _, err := mgmt.ACLTokens().Create(&api.ACLToken{Name: name, Type: "client", Policies: []string{name}}, nil)
	if err != nil {
		t.Fatalf("token for %s: %v", name, err)
	}
	return tok.SecretID
}

// taskEnv returns the environment (NUL-separated, as /proc has it) of the
// simulator serving model, a process of the agent's raw_exec driver on
// this machine.
func taskEnv(t *testing.T, agent *e2e.Nomad, model string) []byte {
	t.Helper()
	want := fmt.Sprintf("\x00--model\x00%s\x00", model)
	pids := e2e.ProcsWhere(func(pid int) bool {
		b, err := os.ReadFile(e2e.ProcFile(pid, "cmdline"))
		return err == nil && bytes.Contains(b, []byte("\x00sim\x00")) && bytes.Contains(b, []byte(want))
	})
	if len(pids) != 1 {
		t.Fatalf("%d simulator processes serving %s, want 1", len(pids), model)
	}
	env, err := os.ReadFile(e2e.ProcFile(pids[0], "environ"))
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{0}, env...)
}

// squash collapses runs of white space, so a block indented in a Markdown
// list matches.
func squash(s string) string { return strings.Join(strings.Fields(s), " ") }

// startACLAgent starts a Nomad agent with ACLs enabled and the given fake
// GPUs, stopped when the test ends, and returns it with a client holding
// its management token.
func startACLAgent(t *testing.T, gpus string) (*e2e.Nomad, *api.Client) {
	t.Helper()
	needCluster(t)
	agent, err := e2e.StartNomad(e2e.NomadConfig{GPUs: gpus, Dir: t.TempDir(), ACL: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := agent.Stop(); err != nil {
			t.Errorf("ACL agent: %v", err)
		}
	})
	mgmt, err := api.NewClient(&api.Config{Address: agent.URL, SecretID: agent.Token})
	if err != nil {
		t.Fatal(err)
	}
	return agent, mgmt
}
