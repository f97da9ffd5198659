package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

// sameJSON fails t unless a and b encode to the same JSON.
func sameJSON(t *testing.T, what string, a, b any) {
	t.Helper()
	ja, err := json.Marshal(a)
	must(t, err, "marshal")
	jb, err := json.Marshal(b)
	must(t, err, "marshal")
	if !bytes.Equal(ja, jb) {
		t.Fatalf("%s:\n got  %s\n want %s", what, ja, jb)
	}
}

func testEnrollmentRoundTrip(t *testing.T, open func(*testing.T) store.Store, certs testCerts) {
	s := open(t)
	in := &dps.IndividualEnrollment{
		RegistrationID: "Device-X509",
		DeviceID:       "device-x509",
		EnrollmentSettings: dps.EnrollmentSettings{
			Attestation: &dps.AttestationMechanism{Type: dps.AttestationX509, X509: &dps.X509Attestation{
				ClientCertificates: &dps.X509Certificates{Primary: certs.a.withInfo(certs.a.pemText())},
			}},
			Capabilities:               &dps.DeviceCapabilities{IotEdge: true},
			IotHubHostName:             "hub1.azure-devices.net",
			InitialTwin:                &dps.InitialTwin{Tags: json.RawMessage(`{"site":"north","n":1}`), Properties: &dps.InitialTwinProperties{Desired: json.RawMessage(`{"interval":30}`)}},
			Etag:                       `"ignored-by-the-store"`,
			ProvisioningStatus:         dps.ProvisioningDisabled,
			ReprovisionPolicy:          &dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: false},
			CreatedDateTimeUtc:         dps.NewTime(time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)), // ignored by the store
			AllocationPolicy:           dps.AllocationCustom,
			IotHubs:                    []string{"hub1.azure-devices.net", "hub2.azure-devices.net"},
			CustomAllocationDefinition: &dps.CustomAllocationDefinition{WebhookURL: "https://example.com/alloc", APIVersion: "2021-10-01"},
		},
		OptionalDeviceInformation: json.RawMessage(`{"model":"m1"}`),
		RegistrationState: &dps.DeviceRegistrationState{RegistrationID: "Device-X509", Status: dps.StatusAssigned,
			AssignedHub: "hub1.azure-devices.net", Etag: "abc"},
	}
	roundTrip(t, s, enrollmentKind(), in)
}

func testGroupRoundTrip(t *testing.T, open func(*testing.T) store.Store, certs testCerts) {
	s := open(t)
	in := &dps.EnrollmentGroup{
		EnrollmentGroupID: "Group-X509",
		EnrollmentSettings: dps.EnrollmentSettings{
			Attestation: &dps.AttestationMechanism{Type: dps.AttestationX509, X509: &dps.X509Attestation{
				SigningCertificates: &dps.X509Certificates{
					Primary:   certs.a.withInfo(certs.a.pemText()),
					Secondary: certs.b.withInfo(certs.b.b64DER()),
				},
			}},
			Capabilities:       &dps.DeviceCapabilities{IotEdge: false},
			InitialTwin:        &dps.InitialTwin{Tags: json.RawMessage(`{"fleet":"a"}`)},
			ProvisioningStatus: dps.ProvisioningEnabled,
			ReprovisionPolicy:  &dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true},
			AllocationPolicy:   dps.AllocationStatic,
			IotHubs:            []string{"hub1.azure-devices.net"},
		},
	}
	roundTrip(t, s, groupKind(), in)
}

// roundTrip puts in and checks that the store answers, and then reads
// back, every field as given but the etag and timestamps, which are its own.
func roundTrip[T any](t *testing.T, s store.Store, k kind[T], in T) {
	t.Helper()
	sent := k.meta(in)
	out, err := k.put(s, bg(t), in, "")
	must(t, err, "put")
	if m := k.meta(out); m.etag == sent.etag || m.created.Equal(sent.created) {
		t.Fatalf("the store kept the caller's etag %q or created %v", m.etag, m.created)
	}
	k.setMeta(in, k.meta(out))
	sameJSON(t, "put result", out, in)
	got, err := k.get(s, bg(t), strings.ToLower(k.id(in)))
	must(t, err, "get")
	sameJSON(t, "get", got, in)
}

// pager lists one page of record IDs.
type pager func(ctx context.Context, s store.Store, after string, limit int) (ids []string, next string, err error)

// pageIDs is a pager's answer for a page of records with the given IDs.
func pageIDs[T any](id func(T) string) func(store.Page[T], error) ([]string, string, error) {
	return func(p store.Page[T], err error) ([]string, string, error) {
		ids := make([]string, 0, len(p.Items))
		for _, v := range p.Items {
			ids = append(ids, id(v))
		}
		return ids, p.Next, err
	}
}

// put stores a record made by k.
func put[T any](k kind[T]) func(t *testing.T, s store.Store, id string) {
	return func(t *testing.T, s store.Store, id string) {
		t.Helper()
		k.create(t, s, id, "x")
	}
}

// saveInGroup saves a registration record of a device of group ("" for an
// individual enrollment).
func saveInGroup(t *testing.T, s store.Store, id, group string) {
	t.Helper()
	r := registrationKind().make(id, "hub1.azure-devices.net")
	r.EnrollmentGroupID = group
	_, err := s.SaveRegistration(bg(t), r, "", nil)
	must(t, err, "save registration")
}

func testPaging(t *testing.T, open func(*testing.T) store.Store) {
	lists := map[string]struct {
		create func(t *testing.T, s store.Store, id string)
		list   pager
	}{
		"enrollments": {put(enrollmentKind()), func(ctx context.Context, s store.Store, after string, limit int) ([]string, string, error) {
			return pageIDs(enrollmentKind().id)(s.Enrollments(ctx, after, limit))
		}},
		"groups": {put(groupKind()), func(ctx context.Context, s store.Store, after string, limit int) ([]string, string, error) {
			return pageIDs(groupKind().id)(s.Groups(ctx, after, limit))
		}},
		"registrations": {
			create: func(t *testing.T, s store.Store, id string) {
				group := ""
				if len(id)%2 == 0 {
					group = "fleet-1"
				}
				saveInGroup(t, s, id, group)
			},
			list: func(ctx context.Context, s store.Store, after string, limit int) ([]string, string, error) {
				return pageIDs(registrationKind().id)(s.Registrations(ctx, after, limit))
			},
		},
		"registrations by group": {
			create: func(t *testing.T, s store.Store, id string) {
				saveInGroup(t, s, id, "Fleet-1")
				// Records of another group and of individual enrollments
				// must not show up.
				saveInGroup(t, s, "other-"+id, "fleet-2")
				saveInGroup(t, s, "solo-"+id, "")
			},
			list: func(ctx context.Context, s store.Store, after string, limit int) ([]string, string, error) {
				p, err := s.RegistrationsByGroup(ctx, "FLEET-1", after, limit)
				for _, r := range p.Items {
					if !strings.EqualFold(r.EnrollmentGroupID, "fleet-1") {
						return nil, "", fmt.Errorf("record %s of group %q listed under fleet-1", r.Result.RegistrationID, r.EnrollmentGroupID)
					}
				}
				return pageIDs(registrationKind().id)(p, err)
			},
		},
	}
	for name, l := range lists {
		for _, tc := range []struct {
			name   string
			n      int   // records
			limits []int // page sizes asked for
			pages  []int // page sizes answered
		}{
			{"empty", 0, []int{10}, []int{0}},
			{"several pages", 25, []int{10}, []int{10, 10, 5}},
			{"exact multiple of the page size ends without an empty page", 20, []int{10}, []int{10, 10}},
			{"page size one", 3, []int{1}, []int{1, 1, 1}},
			{"no limit means 100", 101, []int{0, -1}, []int{100, 1}},
		} {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				s := open(t)
				want := mixedIDs(tc.n)
				for _, id := range want {
					l.create(t, s, id)
				}
				for _, limit := range tc.limits {
					all, pages := walk(t, s, l.list, limit)
					if !slices.Equal(pages, tc.pages) {
						t.Fatalf("limit %d: page sizes %v, want %v", limit, pages, tc.pages)
					}
					checkPaged(t, all, want)
				}
			})
		}
	}
}

// mixedIDs returns n IDs of mixed case, in an order unlike key order.
func mixedIDs(n int) []string {
	var out []string
	for i := range n {
		j := (i * 7) % n
		id := fmt.Sprintf("dev-%03d", j)
		if j%3 == 0 {
			id = strings.ToUpper(id)
		}
		out = append(out, id)
	}
	return out
}

// walk lists every page and checks the paging rules.
func walk(t *testing.T, s store.Store, list pager, limit int) (all []string, pages []int) {
	t.Helper()
	after := ""
	for range 1000 {
		got, next, err := list(bg(t), s, after, limit)
		must(t, err, "list")
		pages = append(pages, len(got))
		all = append(all, got...)
		if next == "" {
			return all, pages
		}
		if len(got) == 0 {
			t.Fatalf("empty page with next %q", next)
		}
		after = next
	}
	t.Fatal("paging does not end")
	return nil, nil
}

// checkPaged fails t unless all holds the IDs of want, each once, in key
// order.
func checkPaged(t *testing.T, all, want []string) {
	t.Helper()
	sameSet(t, "listed IDs", all, want)
	lower := make([]string, len(all))
	for i, id := range all {
		lower[i] = strings.ToLower(id)
	}
	if !slices.IsSorted(lower) {
		t.Fatalf("items not in key order: %q", all)
	}
	if len(slices.Compact(slices.Clone(lower))) != len(lower) {
		t.Fatalf("duplicates across pages: %q", all)
	}
}

// testLists checks the unpaged lists.
func testLists(t *testing.T, open func(*testing.T) store.Store, certs testCerts) {
	t.Run("policies", func(t *testing.T) {
		s := open(t)
		got, err := s.Policies(bg(t))
		must(t, err, "policies")
		if len(got) != 0 {
			t.Fatalf("empty store lists %d policies", len(got))
		}
		for _, n := range []string{"provisioningserviceowner", "Reader", "writer"} {
			p := policyKind().make(n, "key-"+n)
			p.Rights = []string{dps.RightEnrollmentRead, "right-" + n}
			_, err := s.PutPolicy(bg(t), p, "")
			must(t, err, "put policy")
		}
		got, err = s.Policies(bg(t))
		must(t, err, "policies")
		var names []string
		for _, p := range got {
			names = append(names, p.Name)
			if p.PrimaryKey != "key-"+p.Name || !slices.Equal(p.Rights, []string{dps.RightEnrollmentRead, "right-" + p.Name}) {
				t.Fatalf("policy %+v does not round-trip", p)
			}
		}
		sameSet(t, "policies", names, []string{"provisioningserviceowner", "Reader", "writer"})
		must(t, s.DeletePolicy(bg(t), "reader", ""), "delete policy")
		got, err = s.Policies(bg(t))
		must(t, err, "policies")
		if len(got) != 2 {
			t.Fatalf("%d policies after delete, want 2", len(got))
		}
	})
	t.Run("linked hubs", func(t *testing.T) {
		s := open(t)
		for i, n := range []string{"hub1.azure-devices.net", "Hub2.azure-devices.net"} {
			h := &store.LinkedHub{Name: n, ConnectionString: "HostName=" + n, Location: "loc", AllocationWeight: i + 1, ApplyAllocationPolicy: i == 0}
			_, err := s.PutLinkedHub(bg(t), h, "")
			must(t, err, "put hub")
		}
		got, err := s.LinkedHubs(bg(t))
		must(t, err, "linked hubs")
		if len(got) != 2 {
			t.Fatalf("%d hubs, want 2", len(got))
		}
		for _, h := range got {
			switch h.Name {
			case "hub1.azure-devices.net":
				if h.AllocationWeight != 1 || !h.ApplyAllocationPolicy || h.ConnectionString != "HostName="+h.Name {
					t.Fatalf("hub %+v does not round-trip", h)
				}
			case "Hub2.azure-devices.net":
				if h.AllocationWeight != 2 || h.ApplyAllocationPolicy {
					t.Fatalf("hub %+v does not round-trip", h)
				}
			default:
				t.Fatalf("unexpected hub %q", h.Name)
			}
		}
	})
	t.Run("ca certificates", func(t *testing.T) {
		s := open(t)
		for i, c := range []testCert{certs.a, certs.b} {
			ca := &store.CACertificate{Name: fmt.Sprintf("CA-%d", i), CertificateDER: c.der, SHA256Thumbprint: c.thumb,
				Subject: c.subject(), IsVerified: i == 1, VerificationCode: fmt.Sprintf("code-%d", i)}
			_, err := s.PutCACertificate(bg(t), ca, "")
			must(t, err, "put CA")
		}
		got, err := s.CACertificates(bg(t))
		must(t, err, "CA certificates")
		sameSet(t, "CAs", caNames(got), []string{"CA-0", "CA-1"})
		for _, ca := range got {
			want := certs.a
			if ca.Name == "CA-1" {
				want = certs.b
			}
			if !bytes.Equal(ca.CertificateDER, want.der) || ca.SHA256Thumbprint != want.thumb ||
				!bytes.Equal(ca.Subject, want.subject()) || ca.IsVerified != (ca.Name == "CA-1") ||
				ca.VerificationCode != "code-"+ca.Name[3:] {
				t.Fatalf("CA %s does not round-trip", ca.Name)
			}
		}
	})
}
