package bench

import (
	"fmt"
	"html"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
)

// The report's plots are hand-written SVG: no JavaScript, no fonts or
// files from elsewhere, so report.html reads the same offline, in a mail
// attachment or in a CI artefact viewer. Each <svg> is a well-formed XML
// document of its own (tests decode it with encoding/xml).

// implColors are the plot colours by implementation: sluice in a strong
// blue that stands out, peers in muted colours of their own, the kernel
// limit in black.
var implColors = map[string]string{
	ImplSluice:    "#1f5fbf",
	ImplGVisor:    "#e08a2e",
	"pasta":       "#3a9a5b",
	"slirp4netns": "#8a5cb8",
	"tcpdump":     "#c0504d",
	"netsniff-ng": "#7f7f7f",
	implKernel:    "#000000",
}

// otherColors colour implementations the table above does not know.
var otherColors = []string{"#17becf", "#bcbd22", "#8c564b", "#e377c2"}

// implKernel is the implementation name of plain kernel forwarding, the
// limit a scenario's figures are drawn against.
const implKernel = "kernel"

func colorOf(impl string, order []string) string {
	if c, ok := implColors[impl]; ok {
		return c
	}
	i := slices.Index(order, impl)
	if i < 0 {
		i = 0
	}
	return otherColors[i%len(otherColors)]
}

// svgBuilder accumulates an SVG document.
type svgBuilder struct{ b strings.Builder }

func (s *svgBuilder) f(format string, args ...any) { fmt.Fprintf(&s.b, format, args...) }

// esc escapes text and attribute values for XML.
func esc(s string) string { return html.EscapeString(s) }

func (s *svgBuilder) open(w, h float64, title string) {
	s.f(`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" role="img" font-family="sans-serif" font-size="12">`, w, h, w, h)
	s.f(`<title>%s</title>`, esc(title))
}

func (s *svgBuilder) text(x, y float64, anchor, extra, txt string) {
	s.f(`<text x="%.1f" y="%.1f" text-anchor="%s"%s>%s</text>`, x, y, anchor, extra, esc(txt))
}

func (s *svgBuilder) close() string {
	s.b.WriteString(`</svg>`)
	return s.b.String()
}

// niceScale returns an axis maximum at or above hi and a tick step, both
// 1, 2 or 5 times a power of ten, for about n ticks.
func niceScale(hi float64, n int) (top, step float64) {
	if !(hi > 0) || math.IsInf(hi, 0) {
		return 1, 0.2
	}
	raw := hi / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		step = m * p
		if step >= raw {
			break
		}
	}
	top = math.Ceil(hi/step-1e-9) * step
	return top, step
}

// formatShort prints v compactly for axis ticks and bar labels: 591k,
// 1.24M, 5.61, 0.25.
func formatShort(v float64) string {
	a := math.Abs(v)
	trim := func(s string) string {
		if strings.Contains(s, ".") {
			s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
		}
		return s
	}
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "-"
	case a >= 1e9:
		return trim(fmt.Sprintf("%.3g", v/1e9)) + "G"
	case a >= 1e6:
		return trim(fmt.Sprintf("%.3g", v/1e6)) + "M"
	case a >= 1e4:
		return trim(fmt.Sprintf("%.3g", v/1e3)) + "k"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a == 0:
		return "0"
	default:
		return trim(fmt.Sprintf("%.3g", v))
	}
}

// barChart is one metric of one scenario: a group of bars per
// configuration, one bar per implementation, and the kernel limit drawn as
// a dashed line across the groups it applies to.
type barChart struct {
	Title    string
	Subtitle string
	Unit     string
	// Impls orders the bars within a group and the legend.
	Impls  []string
	Groups []barGroup
	// LowerIsBetter is said in the axis label, so that a reader does not
	// take a longer RSS bar for a win.
	LowerIsBetter bool
}

type barGroup struct {
	Label string
	Bars  []bar
	// Limit is the kernel's figure for this group, NaN if none.
	Limit Stats
}

type bar struct {
	Impl string
	Stats
	// Note is shown after the value, for example the peer's own config
	// when it was measured in fewer dimensions.
	Note string
}

// Geometry of bar charts, in pixels.
const (
	plotWidth   = 610 // the bars' scale
	valueMargin = 80  // room right of the longest bar for its label
	// Configuration labels go left of the bars in a column as wide as
	// the longest needs, at about 6.6 px a character of 12 px
	// sans-serif, within these bounds.
	minLabelWidth = 120
	maxLabelWidth = 440
	charWidth     = 6.6
	barHeight     = 14
	barGap        = 2
	groupGap      = 12
	limitLabelH   = 12 // the kernel limit's label line above a group
	chartTop      = 46 // title, subtitle
	axisHeight    = 40 // tick labels and the axis title
	legendH       = 22
)

// svg renders the chart.
func (c barChart) svg() string {
	hi := 0.0
	rows := 0
	for _, g := range c.Groups {
		rows += len(g.Bars)
		for _, b := range g.Bars {
			hi = math.Max(hi, nanTo0(b.Max))
		}
		hi = math.Max(hi, nanTo0(g.Limit.Median)) // the limit is drawn at its median
	}
	top, step := niceScale(hi, 5)
	longest := 0
	for _, g := range c.Groups {
		longest = max(longest, utf8.RuneCountInString(g.Label))
	}
	labelWidth := math.Round(min(max(float64(longest)*charWidth+16, minLabelWidth), maxLabelWidth))
	// Labels longer than the widest column are cut.
	fit := min(longest, int(math.Floor((maxLabelWidth-16)/charWidth)))
	chartWidth := labelWidth + plotWidth + valueMargin
	plotW := float64(plotWidth)
	x := func(v float64) float64 { return labelWidth + plotW*v/top }
	// With a kernel limit, each group gets a line of its own above it
	// for the limit's label, clear of the bars' value labels.
	gap := float64(groupGap)
	for _, g := range c.Groups {
		if g.Limit.N > 0 {
			gap = groupGap + limitLabelH
			break
		}
	}
	plotH := float64(rows*(barHeight+barGap)) + float64(len(c.Groups))*gap
	h := chartTop + plotH + axisHeight + legendH
	var s svgBuilder
	s.open(chartWidth, h, c.Title)
	s.f(`<rect width="100%%" height="100%%" fill="#ffffff"/>`)
	s.text(8, 18, "start", ` font-size="15" font-weight="bold"`, c.Title)
	if c.Subtitle != "" {
		s.text(8, 36, "start", ` fill="#555555"`, c.Subtitle)
	}
	y0 := float64(chartTop)
	// Grid and ticks.
	for v := 0.0; v <= top+step/2; v += step {
		s.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#dddddd"/>`, x(v), y0, x(v), y0+plotH)
		s.text(x(v), y0+plotH+14, "middle", ` fill="#444444"`, formatShort(v))
	}
	axis := c.Unit
	if c.LowerIsBetter {
		axis += " (lower is better)"
	}
	s.text(labelWidth+plotW/2, y0+plotH+32, "middle", ` fill="#444444"`, axis)
	y := y0 + gap - groupGap/2
	for _, g := range c.Groups {
		gh := float64(len(g.Bars)*(barHeight+barGap) - barGap)
		label := g.Label
		if r := []rune(label); len(r) > fit {
			label = string(r[:fit-1]) + "…"
		}
		s.text(labelWidth-8, y+gh/2+4, "end", "", label)
		for _, b := range g.Bars {
			col := colorOf(b.Impl, c.Impls)
			w := math.Max(x(nanTo0(b.Median))-labelWidth, 0)
			s.f(`<rect x="%.0f" y="%.1f" width="%.1f" height="%d" fill="%s"><title>%s</title></rect>`,
				labelWidth, y, w, barHeight, col, esc(fmt.Sprintf("%s: %s %s", b.Impl, formatStats(b.Stats, c.Unit), c.Unit)))
			end := x(nanTo0(b.Median))
			if b.N > 1 && b.Max > b.Min {
				cy := y + barHeight/2
				s.f(`<path d="M%.1f %.1fH%.1fM%.1f %.1fV%.1fM%.1f %.1fV%.1f" stroke="#222222" stroke-width="1.2" fill="none"/>`,
					x(b.Min), cy, x(b.Max), x(b.Min), cy-4, cy+4, x(b.Max), cy-4, cy+4)
				end = math.Max(end, x(b.Max))
			}
			label := formatShort(b.Median)
			if b.Note != "" {
				label += " " + b.Note
			}
			s.text(end+4, y+barHeight-3, "start", ` font-size="11" fill="#333333"`, label)
			y += barHeight + barGap
		}
		if g.Limit.N > 0 {
			lx := x(g.Limit.Median)
			top := y - gh - barGap
			s.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2" stroke-dasharray="5 3"><title>%s</title></line>`,
				lx, top-limitLabelH+2, lx, y+1, implColors[implKernel], esc("kernel limit: "+formatStats(g.Limit, c.Unit)+" "+c.Unit))
			s.text(lx+4, top-3, "start", ` font-size="10.5"`, "kernel "+formatShort(g.Limit.Median))
		}
		y += gap
	}
	s.f(`<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#444444"/>`, labelWidth, y0, labelWidth, y0+plotH)
	// Legend.
	lx, ly := labelWidth, y0+plotH+axisHeight+8
	for _, impl := range c.Impls {
		if impl == implKernel {
			s.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#000000" stroke-width="2" stroke-dasharray="5 3"/>`, lx, ly-4, lx+18, ly-4)
			s.text(lx+24, ly, "start", "", "kernel limit")
			lx += 24 + 80
			continue
		}
		s.f(`<rect x="%.1f" y="%.1f" width="14" height="10" fill="%s"/>`, lx, ly-9, colorOf(impl, c.Impls))
		s.text(lx+18, ly, "start", "", impl)
		lx += 18 + float64(7*len(impl)) + 20
	}
	if hasSpread(c.Groups) {
		s.text(chartWidth-8, ly, "end", ` fill="#555555"`, "bars: median; whiskers: min–max")
	}
	return s.close()
}

func hasSpread(gs []barGroup) bool {
	for _, g := range gs {
		for _, b := range g.Bars {
			if b.N > 1 {
				return true
			}
		}
	}
	return false
}

func nanTo0(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// lineChart is one figure over time: a line per implementation and
// repeat, the first repeat solid and later ones lighter.
type lineChart struct {
	Title string
	Unit  string
	Impls []string
	Lines []series
}

type series struct {
	Impl   string
	Repeat int
	Points [][2]float64 // (t_s, value)
}

// Geometry of line charts: small multiples, three to a row.
const (
	lineW     = 290
	lineH     = 190
	lineLeft  = 44
	lineRight = 10
	lineTop   = 30
	lineBot   = 34
)

func (c lineChart) svg() string {
	var tmax, vmax float64
	for _, l := range c.Lines {
		for _, p := range l.Points {
			tmax = math.Max(tmax, p[0])
			vmax = math.Max(vmax, nanTo0(p[1]))
		}
	}
	ttop, tstep := niceScale(tmax, 4)
	vtop, vstep := niceScale(vmax, 4)
	pw, ph := float64(lineW-lineLeft-lineRight), float64(lineH-lineTop-lineBot)
	x := func(t float64) float64 { return lineLeft + pw*t/ttop }
	y := func(v float64) float64 { return lineTop + ph - ph*v/vtop }
	var s svgBuilder
	s.open(lineW, lineH, c.Title)
	s.f(`<rect width="100%%" height="100%%" fill="#ffffff"/>`)
	for i, ln := range wrapWords(c.Title, 46, 2) {
		s.text(6, 12+float64(i)*12, "start", ` font-size="10.5" font-weight="bold"`, ln)
	}
	for v := 0.0; v <= vtop+vstep/2; v += vstep {
		s.f(`<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e4e4e4"/>`, lineLeft, y(v), lineLeft+pw, y(v))
		s.text(lineLeft-4, y(v)+4, "end", ` font-size="10" fill="#444444"`, formatShort(v))
	}
	for t := 0.0; t <= ttop+tstep/2; t += tstep {
		s.text(x(t), lineTop+ph+13, "middle", ` font-size="10" fill="#444444"`, formatShort(t))
	}
	s.text(lineLeft+pw/2, lineH-6, "middle", ` font-size="10" fill="#444444"`, "seconds into the window; "+c.Unit)
	s.f(`<path d="M%d %dV%.1fH%.1f" stroke="#444444" fill="none"/>`, lineLeft, lineTop, lineTop+ph, lineLeft+pw)
	for _, l := range c.Lines {
		if len(l.Points) == 0 {
			continue
		}
		var d strings.Builder
		for i, p := range l.Points {
			cmd := "L"
			if i == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&d, "%s%.1f %.1f", cmd, x(p[0]), y(nanTo0(p[1])))
		}
		op := "1"
		if l.Repeat > 1 {
			op = "0.35"
		}
		s.f(`<path d="%s" stroke="%s" stroke-width="1.6" stroke-opacity="%s" fill="none"><title>%s</title></path>`,
			d.String(), colorOf(l.Impl, c.Impls), op, esc(fmt.Sprintf("%s, repeat %d", l.Impl, l.Repeat)))
	}
	return s.close()
}

// wrapWords splits s at spaces into at most n lines of about width
// characters; the last line takes the rest.
func wrapWords(s string, width, n int) []string {
	var out []string
	for len(s) > width && len(out) < n-1 {
		cut := strings.LastIndex(s[:width], " ")
		if cut <= 0 {
			break
		}
		out = append(out, s[:cut])
		s = s[cut+1:]
	}
	return append(out, s)
}
