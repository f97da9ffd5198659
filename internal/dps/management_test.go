package dps

import (
	"slices"
	"strings"
	"testing"
)

func TestParseRights(t *testing.T) {
	for name, tc := range map[string]struct {
		in      string
		want    []string
		wantErr string
	}{
		"ok/one":                {in: "EnrollmentRead", want: []string{RightEnrollmentRead}},
		"ok/comma-and-space":    {in: "EnrollmentRead, EnrollmentWrite", want: []string{RightEnrollmentRead, RightEnrollmentWrite}},
		"ok/spaces-only":        {in: "ServiceConfig RegistrationStatusRead", want: []string{RightServiceConfig, RightRegistrationStatusRead}},
		"ok/any-case-canonical": {in: "enrollmentread,SERVICECONFIG", want: []string{RightEnrollmentRead, RightServiceConfig}},
		"ok/repeats-once":       {in: "EnrollmentRead,enrollmentRead, EnrollmentRead", want: []string{RightEnrollmentRead}},
		"ok/all":                {in: strings.Join(AllRights, ","), want: AllRights},
		"fail/unknown":          {in: "EnrollmentRead, Root", wantErr: "unknown right Root; rights are ServiceConfig, EnrollmentRead"},
		"fail/empty":            {in: "", wantErr: "a policy needs at least one right"},
		"fail/separators-only":  {in: " , ,", wantErr: "a policy needs at least one right"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ParseRights(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseRights(%q) = %v, %v; want error %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("ParseRights(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}
