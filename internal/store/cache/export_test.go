package cache

import "reflect"

// Scribble changes every value reachable from v (a pointer) in place.
func Scribble(v any) { scribble(reflect.ValueOf(v).Elem()) }
