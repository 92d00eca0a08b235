package fhirpath

import (
	"math/big"
	"strconv"
	"strings"
	"time"
)

// unitDef is a unit as a multiple of its dimension's base unit (num/den).
type unitDef struct {
	dim      string
	num, den int64
}

// ucum holds the UCUM units compared across units: time (definite durations), mass,
// length and volume. Other units compare only with the same unit.
var ucum = map[string]unitDef{
	"ms": {"s", 1, 1000}, "s": {"s", 1, 1}, "min": {"s", 60, 1}, "h": {"s", 3600, 1},
	"d": {"s", 86400, 1}, "wk": {"s", 604800, 1},
	// UCUM's mean Julian month and year.
	"mo": {"s", 2629800, 1}, "a": {"s", 31557600, 1},
	"ng": {"g", 1, 1000000000}, "ug": {"g", 1, 1000000}, "mg": {"g", 1, 1000}, "g": {"g", 1, 1}, "kg": {"g", 1000, 1},
	"nm": {"m", 1, 1000000000}, "um": {"m", 1, 1000000}, "mm": {"m", 1, 1000}, "cm": {"m", 1, 100}, "m": {"m", 1, 1}, "km": {"m", 1000, 1},
	"uL": {"L", 1, 1000000}, "mL": {"L", 1, 1000}, "dL": {"L", 1, 10}, "L": {"L", 1, 1}, "l": {"L", 1, 1}, "ml": {"L", 1, 1000}, "dl": {"L", 1, 10},
}

// calendarUCUM maps calendar duration keywords below a month to their UCUM definite
// durations, with which they are equal.
var calendarUCUM = map[string]string{
	"week": "wk", "day": "d", "hour": "h", "minute": "min", "second": "s", "millisecond": "ms",
}

// unitOf returns the definition a quantity's unit compares by.
func unitOf(q Value) (unitDef, bool) {
	u := q.str
	if q.flags&flagCalendar != 0 {
		switch u {
		case "year":
			return unitDef{"cal", 12, 1}, true
		case "month":
			return unitDef{"cal", 1, 1}, true
		}
		u = calendarUCUM[u]
	}
	d, ok := ucum[u]
	return d, ok
}

// definiteUnit returns the UCUM unit a calendar year or month is equivalent to.
func definiteUnit(q Value) string {
	if q.flags&flagCalendar != 0 {
		switch q.str {
		case "year":
			return "a"
		case "month":
			return "mo"
		}
	}
	switch q.str {
	case "a", "mo":
		return q.str
	}
	return ""
}

// cmpQuantity compares two quantities; ok=false when their units are not comparable.
func cmpQuantity(a, b Value) (int, bool) {
	if a.str == b.str && a.flags&flagCalendar == b.flags&flagCalendar {
		return cmpDecimal(a.dec(), b.dec()), true
	}
	ua, ok1 := unitOf(a)
	ub, ok2 := unitOf(b)
	if !ok1 || !ok2 || ua.dim != ub.dim {
		return 0, false
	}
	x := new(big.Rat).Mul(a.dec().rat(), big.NewRat(ua.num, ua.den))
	y := new(big.Rat).Mul(b.dec().rat(), big.NewRat(ub.num, ub.den))
	return x.Cmp(y), true
}

// addDuration adds (or subtracts) a time quantity to a Date, DateTime or Time, keeping
// the value's precision; a quantity below the value's precision is truncated to it.
func (e *Evaluator) addDuration(x *node, a, q Value, sub bool) (Value, bool, error) {
	m, err := parseMoment(a.str, a.kind == KindTime)
	if err != nil {
		return Value{}, false, evalErr(x, "malformed date or time")
	}
	unit := q.str
	if q.flags&flagCalendar == 0 {
		switch unit {
		case "a":
			unit = "year"
		case "mo":
			unit = "month"
		case "wk":
			unit = "week"
		case "d":
			unit = "day"
		case "h":
			unit = "hour"
		case "min":
			unit = "minute"
		case "s":
			unit = "second"
		case "ms":
			unit = "millisecond"
		default:
			return Value{}, false, evalErr(x, "date arithmetic needs a time quantity")
		}
	}
	d := q.dec()
	n := d.c / pow10[d.s] // whole units; fractions of calendar units are dropped
	if sub {
		n = -n
	}
	y, mo, day, h, mi, s, ns := m.y, m.mo, m.d, m.h, m.mi, m.s, m.nanos
	if m.prec < precMonth {
		mo = 1
	}
	if m.prec < precDay {
		day = 1
	}
	if m.time {
		y, mo, day = 2000, 1, 1
	}
	t := time.Date(y, time.Month(mo), day, h, mi, s, ns, time.UTC)
	switch unit {
	case "year":
		t = t.AddDate(int(n), 0, 0)
	case "month":
		t = t.AddDate(0, int(n), 0)
	case "week":
		t = t.AddDate(0, 0, 7*int(n))
	case "day":
		t = t.AddDate(0, 0, int(n))
	case "hour":
		t = t.Add(time.Duration(n) * time.Hour)
	case "minute":
		t = t.Add(time.Duration(n) * time.Minute)
	case "second":
		frac := d.c % pow10[d.s]
		t = t.Add(time.Duration(n)*time.Second + time.Duration(frac)*time.Duration(pow10[9])/time.Duration(pow10[d.s]))
	case "millisecond":
		t = t.Add(time.Duration(n) * time.Millisecond)
	}
	start := len(e.str)
	e.str = appendMoment(e.str, t, m)
	return temporalValue(a.kind, e.newString(start), m.prec), true, nil
}

// appendMoment writes t at m's precision, with m's zone.
func appendMoment(b []byte, t time.Time, m moment) []byte {
	pad := func(b []byte, v, w int) []byte {
		s := strconv.Itoa(v)
		for i := len(s); i < w; i++ {
			b = append(b, '0')
		}
		return append(b, s...)
	}
	if !m.time {
		b = pad(b, t.Year(), 4)
		if m.prec >= precMonth {
			b = pad(append(b, '-'), int(t.Month()), 2)
		}
		if m.prec >= precDay {
			b = pad(append(b, '-'), t.Day(), 2)
		}
		if m.prec < precHour {
			return b
		}
		b = append(b, 'T')
	}
	b = pad(b, t.Hour(), 2)
	if m.prec >= precMinute {
		b = pad(append(b, ':'), t.Minute(), 2)
	}
	if m.prec >= precSecond {
		b = pad(append(b, ':'), t.Second(), 2)
		if m.nanos != 0 || t.Nanosecond() != 0 {
			b = append(b, '.')
			b = pad(b, t.Nanosecond()/1000000, 3)
		}
	}
	if m.tz && !m.time {
		if m.off == 0 {
			b = append(b, 'Z')
		} else {
			off := m.off
			sign := byte('+')
			if off < 0 {
				sign, off = '-', -off
			}
			b = pad(append(b, sign), off/60, 2)
			b = pad(append(b, ':'), off%60, 2)
		}
	}
	return b
}

// parseQuantityString parses "4 'mg'", "4 days" or "4" (unit '1').
func parseQuantityString(s string) (Value, bool) {
	s = strings.TrimSpace(s)
	num, unit, _ := strings.Cut(s, " ")
	d, err := parseDecimal(num)
	if err != nil {
		return Value{}, false
	}
	unit = strings.TrimSpace(unit)
	switch {
	case unit == "":
		return quantityValue(d, "1"), true
	case len(unit) >= 2 && unit[0] == '\'' && unit[len(unit)-1] == '\'':
		return quantityValue(d, unit[1:len(unit)-1]), true
	}
	if u, ok := calendarUnits[unit]; ok {
		return quantityValue(d, u), true
	}
	return Value{}, false
}
