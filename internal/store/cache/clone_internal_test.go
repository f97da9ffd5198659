package cache

import (
	"reflect"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

// TestClonesShareNothing: each record type the cache hands out, with every
// field set (found by reflection, so a field added later is set too), is
// copied whole, and changing anything reachable from the copy leaves the
// original as it was.
func TestClonesShareNothing(t *testing.T) {
	for name, c := range map[string]struct {
		make  func() any
		clone func(any) any
	}{
		"instance": {func() any { return new(store.Instance) }, func(v any) any { return cloneInstance(v.(*store.Instance)) }},
		"hub":      {func() any { return new(store.LinkedHub) }, func(v any) any { return cloneHub(v.(*store.LinkedHub)) }},
		"ca":       {func() any { return new(store.CACertificate) }, func(v any) any { return cloneCA(v.(*store.CACertificate)) }},
		"group":    {func() any { return new(dps.EnrollmentGroup) }, func(v any) any { return cloneGroup(v.(*dps.EnrollmentGroup)) }},
		"groups": {func() any { return &[]*dps.EnrollmentGroup{} }, func(v any) any {
			c := cloneAll(cloneGroup)(*v.(*[]*dps.EnrollmentGroup))
			return &c
		}},
		"signing certificates": {func() any { return &[][]byte{} }, func(v any) any {
			c := cloneAll(func(b []byte) []byte { return append([]byte(nil), b...) })(*v.(*[][]byte))
			return &c
		}},
	} {
		t.Run(name, func(t *testing.T) {
			orig, want := c.make(), c.make()
			fill(reflect.ValueOf(orig).Elem())
			fill(reflect.ValueOf(want).Elem())
			if !reflect.DeepEqual(orig, want) {
				t.Fatal("fill is not deterministic")
			}
			cp := c.clone(orig)
			if !reflect.DeepEqual(cp, want) {
				t.Fatalf("the copy differs from the original:\n%+v\n%+v", cp, want)
			}
			scribble(reflect.ValueOf(cp).Elem())
			if !reflect.DeepEqual(orig, want) {
				t.Errorf("changing the copy changed the original")
			}
		})
	}
	if cloneGroup(nil) != nil || cloneCA(nil) != nil || cloneInstance(nil) != nil || cloneHub(nil) != nil {
		t.Error("a nil record copied is not nil")
	}
	if cloneAll(cloneGroup)(nil) != nil {
		t.Error("a nil list copied is not nil")
	}
}

var aTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// fill sets every field reachable from v, through pointers and slices of
// one element, to a non-zero value, the same each time.
func fill(v reflect.Value) {
	if v.Type() == reflect.TypeFor[time.Time]() {
		v.Set(reflect.ValueOf(aTime))
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0))
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint8:
		v.SetUint(1)
	default:
		panic("fill: no rule for " + v.Type().String())
	}
}

// scribble changes every value reachable from v in place: through the
// pointers and slices v holds, not by replacing them.
func scribble(v reflect.Value) {
	if v.Type() == reflect.TypeFor[time.Time]() {
		v.Set(reflect.ValueOf(aTime.Add(time.Hour)))
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			scribble(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				scribble(v.Field(i))
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			scribble(v.Index(i))
		}
	case reflect.String:
		v.SetString("scribbled")
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Uint8:
		v.SetUint(v.Uint() + 1)
	default:
		panic("scribble: no rule for " + v.Type().String())
	}
}
