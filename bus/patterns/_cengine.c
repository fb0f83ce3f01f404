/* The compiled engine of bus/patterns: the event walk and the automaton run of
 * bus/patterns/walk.py's match_python, over the same structures, with the same answers.
 *
 *   match(event, trie, n_paths, root) -> (rule ids, with repeats; set of "multi" path ids or None)
 *   pack(spec) -> Pack       one field's spec tuple (slots: S_* below, names: SPEC) packed
 *
 * All of it is laid out by bus/patterns/cbuild.py, the one Python module that knows it:
 * trie:   tuple of (key, path id or -1, kids trie)                            (cbuild.trie)
 * state:  a cbuild.CState; this reads its `ctrans`: (rule ids ending there, then per field
 *         leaving it three items: path id, Pack, FieldIndex; or path id, value, next state
 *         or states, when the field is one exact value)              (CAutomaton.freeze)
 *
 * Exact values, prefixes, suffixes, ASCII case-insensitive forms, wildcards, numeric ranges
 * by boundaries, dotted-quad IPv4 blocks and anything-but of plain values, prefixes and
 * suffixes are probed here; other conditions are tested by calling their `test`, and what
 * needs Python's own parsing or folding (non-ASCII case folding, IPv6, ranges too many to
 * segment, values that are not JSON scalars) is handed to the FieldIndex probe functions in
 * the spec, which append to a list like they do in Python.
 *
 * Every object this holds across a call that may run Python code is a strong reference, so
 * a misbehaving caller gets wrong answers at worst, never freed memory. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>

/* The version of the layout of specs, trie nodes and transitions; bus/patterns/cbuild.py
 * has the same LAYOUT (bump both together) and checks SPEC against its own. */
#define LAYOUT 8

enum {
    S_EXACT, S_PRESENT, S_ABSENT,
    S_PREFIX, S_PREFIX_LENS, S_SUFFIX, S_SUFFIX_LENS,
    S_CI_EXACT, S_CI_PREFIX, S_CI_PREFIX_LENS, S_CI_SUFFIX, S_CI_SUFFIX_LENS, S_HAS_CI, S_PROBE_CI,
    S_BOUNDS, S_SEGMENTS, S_BOUNDS_DOUBLES, S_PROBE_RANGES,
    S_CIDR, S_PROBE_CIDR,
    S_WILD_HEAD_LENS, S_WILD,
    S_NEGATIONS, S_REST, S_PROBE_GENERIC, S_SIZE
};
/* The names of the S_* slots, in order (exported as SPEC). */
static const char *const SPEC_NAMES[S_SIZE] = {
    "exact", "present", "absent",
    "prefix", "prefix_lens", "suffix", "suffix_lens",
    "ci_exact", "ci_prefix", "ci_prefix_lens", "ci_suffix", "ci_suffix_lens", "has_ci", "probe_ci",
    "bounds", "segments", "bounds_doubles", "probe_ranges",
    "cidr", "probe_cidr",
    "wild_head_lens", "wild",
    "negations", "rest", "probe_generic",
};
static PyObject *TEST_NAME;  /* "test", the method of a condition */

static PyObject *TRUE_KEY, *FALSE_KEY;
/* cbuild.CState and the offset of its `ctrans` slot (read directly: a getattr per state visited
 * was a tenth of the time). */
static PyTypeObject *StateType;
static Py_ssize_t ctrans_offset;

/* A growable array of strong references. */
typedef struct {
    PyObject **items;
    Py_ssize_t n, cap;
    PyObject *small[32];
} Vec;

static void vec_init(Vec *v) { v->items = v->small; v->n = 0; v->cap = 32; }

static int vec_push(Vec *v, PyObject *o) {
    if (v->n == v->cap) {
        Py_ssize_t cap = v->cap * 2;
        PyObject **items = PyMem_Malloc(cap * sizeof(PyObject *));
        if (items == NULL) { PyErr_NoMemory(); return -1; }
        memcpy(items, v->items, v->n * sizeof(PyObject *));
        if (v->items != v->small) PyMem_Free(v->items);
        v->items = items;
        v->cap = cap;
    }
    Py_INCREF(o);
    v->items[v->n++] = o;
    return 0;
}

static void vec_clear(Vec *v) {
    while (v->n > 0) { v->n--; Py_DECREF(v->items[v->n]); }
}

static void vec_free(Vec *v) {
    vec_clear(v);
    if (v->items != v->small) PyMem_Free(v->items);
    v->items = v->small;
    v->cap = 32;
}

/* ---- the event walk (walk.py's _walk / _walk_array) ----------------------------------- */

/* The path ids that got values from under an array of two or more objects, as bits (the
 * Python set match() returns is made once at the end). */
typedef struct {
    uint64_t *bits;
    int any;
    int dots;    /* look for dotted field names on mentioned paths (bus/patterns/dotted.py) */
    int dotted;  /* found one: the walk stopped (-1 with no exception set); match the expanded event */
} Multi;

static int add_multi(Multi *multi, Py_ssize_t pid) {
    multi->bits[pid >> 6] |= (uint64_t)1 << (pid & 63);
    multi->any = 1;
    return 0;
}

static inline int in_multi_set(const Multi *multi, Py_ssize_t pid) {
    return multi->any && (multi->bits[pid >> 6] >> (pid & 63)) & 1;
}

static int store(PyObject **flat, Py_ssize_t pid, PyObject *x) {
    PyObject *old = flat[pid];
    if (old == NULL) {
        Py_INCREF(x);
        flat[pid] = x;
        return 0;
    }
    if (PyList_CheckExact(old)) return PyList_Append(old, x);  /* lists in flat are our own */
    PyObject *pair = PyList_New(2);
    if (pair == NULL) return -1;
    Py_INCREF(x);
    PyList_SET_ITEM(pair, 0, old);  /* flat's reference moves into the list */
    PyList_SET_ITEM(pair, 1, x);
    flat[pid] = pair;
    return 0;
}

static inline PyObject *json_key(PyObject *x) {
    return x == Py_True ? TRUE_KEY : x == Py_False ? FALSE_KEY : x;
}

static int walk_object(PyObject *obj, PyObject *kids, PyObject **flat, Py_ssize_t n_paths,
                       Multi *multi, int in_multi);

static int node_parts(PyObject *node, PyObject **key, PyObject **kids) {
    if (!PyTuple_CheckExact(node) || PyTuple_GET_SIZE(node) != 3 || !PyTuple_CheckExact(PyTuple_GET_ITEM(node, 2))) {
        PyErr_SetString(PyExc_TypeError, "bad trie node");
        return -1;
    }
    *key = PyTuple_GET_ITEM(node, 0);
    *kids = PyTuple_GET_ITEM(node, 2);
    return 0;
}

/* A node's path id (-1: none), read only when the event has its key (most kids are missed). */
static int node_pid(PyObject *node, Py_ssize_t *pid, Py_ssize_t n_paths) {
    *pid = PyLong_AsSsize_t(PyTuple_GET_ITEM(node, 1));
    if (*pid == -1 && PyErr_Occurred()) return -1;
    if (*pid >= n_paths || *pid < -1) {
        PyErr_SetString(PyExc_ValueError, "bad trie node");
        return -1;
    }
    return 0;
}

static int walk_array(PyObject *items, Py_ssize_t pid, PyObject *kids, PyObject **flat,
                      Py_ssize_t n_paths, Multi *multi, int in_multi) {
    Py_ssize_t n = PyList_GET_SIZE(items);
    if (pid >= 0 && !in_multi && flat[pid] == NULL) {
        /* The usual array: scalars only (tags, resources). */
        Py_ssize_t i;
        for (i = 0; i < n; i++) {
            PyObject *e = PyList_GET_ITEM(items, i);
            if (PyDict_CheckExact(e) || PyList_CheckExact(e) || PyBool_Check(e)) break;
        }
        if (i == n) {
            if (n > 0 && (flat[pid] = PyList_GetSlice(items, 0, n)) == NULL) return -1;
            return 0;
        }
    }
    {
        Py_ssize_t i;
        for (i = 0; i < n; i++)
            if (!PyDict_CheckExact(PyList_GET_ITEM(items, i))) break;
        if (i == n) {  /* the other usual array: objects only (items); as below, without the lists */
            if (PyTuple_GET_SIZE(kids) == 0) return 0;
            int nested = in_multi || n > 1;
            for (i = 0; i < n && i < PyList_GET_SIZE(items); i++) {
                PyObject *e = PyList_GET_ITEM(items, i);
                Py_INCREF(e);
                int r = walk_object(e, kids, flat, n_paths, multi, nested);
                Py_DECREF(e);
                if (r < 0) return -1;
            }
            return 0;
        }
    }
    int rc = -1;
    PyObject *objects = PyList_New(0), *scalars = PyList_New(0), *pending = PyList_New(0);
    if (objects == NULL || scalars == NULL || pending == NULL || PyList_Append(pending, items) < 0) goto done;
    while (PyList_GET_SIZE(pending) > 0) {
        Py_ssize_t last = PyList_GET_SIZE(pending) - 1;
        PyObject *current = PyList_GET_ITEM(pending, last);
        Py_INCREF(current);
        if (PyList_SetSlice(pending, last, last + 1, NULL) < 0) { Py_DECREF(current); goto done; }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(current); i++) {
            PyObject *e = PyList_GET_ITEM(current, i);
            PyObject *target = PyDict_CheckExact(e) ? objects : PyList_CheckExact(e) ? pending : scalars;
            if (PyList_Append(target, target == scalars ? json_key(e) : e) < 0) { Py_DECREF(current); goto done; }
        }
        Py_DECREF(current);
    }
    if (PyList_GET_SIZE(scalars) > 0 && pid >= 0) {
        PyObject *old = flat[pid];
        if (old == NULL) {
            Py_INCREF(scalars);
            flat[pid] = scalars;
        } else if (PyList_CheckExact(old)) {
            Py_ssize_t end = PyList_GET_SIZE(old);
            if (PyList_SetSlice(old, end, end, scalars) < 0) goto done;
        } else {
            if (PyList_Insert(scalars, 0, old) < 0) goto done;
            flat[pid] = scalars;  /* flat's reference to `old` now lives in the list */
            Py_INCREF(scalars);
            Py_DECREF(old);
        }
        if (in_multi && add_multi(multi, pid) < 0) goto done;
    }
    Py_ssize_t n_objects = PyList_GET_SIZE(objects);
    if (n_objects > 0 && PyTuple_GET_SIZE(kids) > 0) {
        int nested = in_multi || n_objects > 1;
        for (Py_ssize_t i = 0; i < n_objects; i++)
            if (walk_object(PyList_GET_ITEM(objects, i), kids, flat, n_paths, multi, nested) < 0) goto done;
    }
    rc = 0;
done:
    Py_XDECREF(objects);
    Py_XDECREF(scalars);
    Py_XDECREF(pending);
    return rc;
}

/* Whether `key` (a str with a dot) splits into segments that are a path of the trie below
 * `kids`: dotted.py's dotted_at for one key. 1, 0, or -1 with an exception. */
static int dotted_path(PyObject *key, PyObject *kids) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(key), start = 0;
    PyObject *level = kids;
    for (;;) {
        Py_ssize_t dot = PyUnicode_FindChar(key, '.', start, n, 1);
        if (dot == -2) return -1;
        Py_ssize_t end = dot < 0 ? n : dot;
        PyObject *next = NULL;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(level) && next == NULL; i++) {
            PyObject *node = PyTuple_GET_ITEM(level, i);
            PyObject *name = PyTuple_GET_ITEM(node, 0);
            if (!PyUnicode_Check(name) || PyUnicode_GET_LENGTH(name) != end - start) continue;
            Py_ssize_t same = PyUnicode_Tailmatch(key, name, start, end, -1);
            if (same < 0) return -1;
            if (same) next = PyTuple_GET_ITEM(node, 2);
        }
        if (next == NULL) return 0;
        if (dot < 0) return 1;
        level = next;
        start = dot + 1;
    }
}

static inline int has_dot(PyObject *key) {
    if (PyUnicode_KIND(key) == PyUnicode_1BYTE_KIND)
        return memchr(PyUnicode_DATA(key), '.', PyUnicode_GET_LENGTH(key)) != NULL;
    return PyUnicode_FindChar(key, '.', 0, PyUnicode_GET_LENGTH(key), 1) >= 0;
}

/* Keys known to have no dot, by address: msgspec decodes a repeated key to one cached str,
 * so most keys of most events are found here and never searched. Each slot holds a reference,
 * so no other object can take a remembered address. */
#define DOTLESS_SLOTS 1024
static PyObject *DOTLESS[DOTLESS_SLOTS];

static inline int dotless(PyObject *key) {
    size_t slot = ((uintptr_t)key >> 4) & (DOTLESS_SLOTS - 1);
    if (DOTLESS[slot] == key) return 1;
    if (!PyUnicode_CheckExact(key) || has_dot(key)) return 0;
    Py_INCREF(key);
    Py_XSETREF(DOTLESS[slot], key);
    return 1;
}

/* Whether a key of `obj` with a dot in it names a path below `kids` (1, 0, -1: error). */
static int dotted_at(PyObject *obj, PyObject *kids) {
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(obj, &pos, &key, &value)) {
        if (dotless(key) || !PyUnicode_CheckExact(key)) continue;
        int r = dotted_path(key, kids);
        if (r != 0) return r;
    }
    return 0;
}

static int walk_object(PyObject *obj, PyObject *kids, PyObject **flat, Py_ssize_t n_paths,
                       Multi *multi, int in_multi) {
    int deep = 0;  /* a kid has kids: a dotted name here could reach a nested path */
    Py_ssize_t hits = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kids); i++) {
        PyObject *node = PyTuple_GET_ITEM(kids, i), *key, *sub;
        Py_ssize_t pid;
        if (node_parts(node, &key, &sub) < 0) return -1;
        deep |= PyTuple_GET_SIZE(sub) > 0;
        PyObject *v = PyDict_GetItemWithError(obj, key);
        if (v == NULL) {
            if (PyErr_Occurred()) return -1;
            continue;
        }
        hits++;
        if (node_pid(node, &pid, n_paths) < 0) return -1;
        if (PyDict_CheckExact(v)) {
            if (PyTuple_GET_SIZE(sub) > 0) {
                Py_INCREF(v);
                int r = walk_object(v, sub, flat, n_paths, multi, in_multi);
                Py_DECREF(v);
                if (r < 0) return -1;
            }
        } else if (PyList_CheckExact(v)) {
            Py_INCREF(v);
            int r = walk_array(v, pid, sub, flat, n_paths, multi, in_multi);
            Py_DECREF(v);
            if (r < 0) return -1;
        } else if (pid >= 0) {
            if (store(flat, pid, json_key(v)) < 0) return -1;
            if (in_multi && add_multi(multi, pid) < 0) return -1;
        }
    }
    if (deep && multi->dots && hits < PyDict_GET_SIZE(obj)) {  /* some key is no kid: a dotted one? */
        int r = dotted_at(obj, kids);
        if (r < 0) return -1;
        if (r) {
            multi->dotted = 1;
            return -1;
        }
    }
    return 0;
}

/* ---- probing one scalar against one field (the FieldIndex._probe_* methods) ------------ */

/* Prefix, suffix and case-insensitive tables for this engine are keyed by the FNV-1a hash
 * of the key's code points (from the end for suffixes; cbuild._affix_hashes), each
 * to a tuple of (key, payload). One pass over the value hashes all its prefixes (suffixes),
 * so probing a length costs no new string and no siphash; a candidate is then compared
 * character by character. `fold`: compare ASCII-lower-cased (v is ASCII, keys are lower
 * case). `whole`: only the full length (equals-ignore-case). `group`: the payload is a list
 * of (condition, states), all taken (ASCII values need no confirmation); otherwise states. */
#define FNV_OFFSET 14695981039346656037ULL
#define FNV_PRIME 1099511628211ULL

static inline Py_UCS4 folded(Py_UCS4 ch, int fold) {
    return (fold && ch >= 'A' && ch <= 'Z') ? ch + 32 : ch;
}

static int affix_equals(PyObject *key, PyObject *v, Py_ssize_t start, Py_ssize_t size, int fold) {
    if (!PyUnicode_CheckExact(key) || PyUnicode_GET_LENGTH(key) != size) return 0;
    int kk = PyUnicode_KIND(key), vk = PyUnicode_KIND(v);
    const void *kd = PyUnicode_DATA(key), *vd = PyUnicode_DATA(v);
    for (Py_ssize_t i = 0; i < size; i++)
        if (PyUnicode_READ(kk, kd, i) != folded(PyUnicode_READ(vk, vd, start + i), fold)) return 0;
    return 1;
}

static int call_probe(PyObject *probe, PyObject *field, PyObject *v, PyObject **pyhits) {
    if (*pyhits == NULL && (*pyhits = PyList_New(0)) == NULL) return -1;
    PyObject *r = PyObject_CallFunctionObjArgs(probe, field, v, *pyhits, NULL);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* A string of ASCII digits and dots: 1 and *address if it is an IPv4 address the way
 * patterns_ops.parse_ip reads one (four decimal octets, leading zeros allowed), 0 if it is
 * not an address. -1: not only digits and dots, so parse_ip must decide. */
static int parse_ipv4(PyObject *v, uint32_t *address) {
    if (!PyUnicode_IS_ASCII(v)) return -1;
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(v);
    for (Py_ssize_t i = 0; i < n; i++)
        if (!(s[i] == '.' || (s[i] >= '0' && s[i] <= '9'))) return -1;
    uint32_t value = 0;
    int octets = 0;
    Py_ssize_t i = 0;
    while (i <= n) {
        if (i == n || s[i] == '.') return 0;  /* an empty octet */
        unsigned octet = 0;
        while (i < n && s[i] != '.') {
            octet = octet * 10 + (s[i] - '0');
            if (octet > 255) return 0;
            i++;
        }
        value = value << 8 | octet;
        octets++;
        if (i == n) break;
        i++;  /* the dot */
    }
    if (octets != 4) return 0;
    *address = value;
    return 1;
}

/* v as a double when that is exact (every float; ints up to 2**53). */
static int exact_double(PyObject *v, double *d) {
    if (PyFloat_CheckExact(v)) {
        *d = PyFloat_AS_DOUBLE(v);
        return 1;
    }
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred()) return -1;
    if (overflow || x > (1LL << 53) || x < -(1LL << 53)) return 0;
    *d = (double)x;
    return 1;
}

/* The segment of v by comparing it with the bound objects (packed_ranges, for values or
 * bounds that are not exact doubles): bisect_left, as FieldIndex._probe_ranges. */
static int ranges_by_objects(Vec *hits, PyObject *spec, PyObject *v) {
    PyObject *bounds = PyTuple_GET_ITEM(spec, S_BOUNDS);
    Py_INCREF(bounds);
    int rc = -1;
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(bounds), n = hi;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        int less = PyObject_RichCompareBool(PyList_GET_ITEM(bounds, mid), v, Py_LT);
        if (less < 0) goto done;
        if (less) lo = mid + 1; else hi = mid;
    }
    Py_ssize_t cell = 2 * lo;
    if (lo < n) {
        int equal = PyObject_RichCompareBool(PyList_GET_ITEM(bounds, lo), v, Py_EQ);
        if (equal < 0) goto done;
        if (equal) cell += 1;
    }
    PyObject *segments = PyTuple_GET_ITEM(spec, S_SEGMENTS);
    if (cell >= PyList_GET_SIZE(segments)) { PyErr_SetString(PyExc_IndexError, "segment"); goto done; }
    PyObject *states = PyList_GET_ITEM(segments, cell);
    rc = PyTuple_GET_SIZE(states) ? vec_push(hits, states) : 0;
done:
    Py_DECREF(bounds);
    return rc;
}

/* patterns_ops.wildcard_match: the glob's literal segments (head, middles..., tail; at least
 * two), `*` between them. v is known to start with the head and end with the tail. Taking
 * each middle at its leftmost place is optimal for `*`-only globs. */
static int glob_match(PyObject *v, PyObject *segments) {
    Py_ssize_t k = PyTuple_GET_SIZE(segments), n = PyUnicode_GET_LENGTH(v);
    if (k < 2) return 0;
    Py_ssize_t pos = PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(segments, 0));
    Py_ssize_t end = n - PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(segments, k - 1));
    if (end < pos) return 0;
    for (Py_ssize_t i = 1; i < k - 1; i++) {
        PyObject *middle = PyTuple_GET_ITEM(segments, i);
        Py_ssize_t found = PyUnicode_Find(v, middle, pos, end, 1);
        if (found == -2) return -1;
        if (found < 0) return 0;
        pos = found + PyUnicode_GET_LENGTH(middle);
    }
    return 1;
}

/* anything-but conditions of plain values, prefixes and suffixes (cbuild._negation):
 * (values, prefixes, suffixes, states) each; a value none of them names is accepted. */
static int probe_negations(Vec *hits, PyObject *negations, PyObject *v) {
    int is_str = PyUnicode_CheckExact(v);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(negations); i++) {
        PyObject *entry = PyTuple_GET_ITEM(negations, i);
        PyObject *values = PyTuple_GET_ITEM(entry, 0);
        int excluded = PySet_GET_SIZE(values) > 0 ? PySet_Contains(values, v) : 0;
        for (int side = 0; side < 2 && is_str && !excluded; side++) {
            PyObject *affixes = PyTuple_GET_ITEM(entry, 1 + side);
            for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(affixes) && !excluded; j++)
                excluded = (int)PyUnicode_Tailmatch(v, PyTuple_GET_ITEM(affixes, j), 0, PY_SSIZE_T_MAX,
                                                    side ? 1 : -1);
        }
        if (excluded < 0) return -1;
        if (!excluded && vec_push(hits, PyTuple_GET_ITEM(entry, 3)) < 0) return -1;
    }
    return 0;
}

/* The generic conditions: anything-but here when v is a JSON scalar, the rest by their
 * `test` (and all of them by the Python probe for any other object a caller put in an event). */
static int probe_generic(Vec *hits, PyObject *spec, PyObject *field, PyObject *v, PyObject **pyhits) {
    PyObject *negations = PyTuple_GET_ITEM(spec, S_NEGATIONS);
    if (PyTuple_GET_SIZE(negations) > 0) {
        int plain = PyUnicode_CheckExact(v) || PyLong_CheckExact(v) || PyFloat_CheckExact(v)
                    || v == Py_None || v == TRUE_KEY || v == FALSE_KEY;
        if (!plain) return call_probe(PyTuple_GET_ITEM(spec, S_PROBE_GENERIC), field, v, pyhits);
        if (probe_negations(hits, negations, v) < 0) return -1;
    }
    PyObject *rest = PyTuple_GET_ITEM(spec, S_REST);  /* ((condition, states), ...) */
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(rest); i++) {
        PyObject *entry = PyTuple_GET_ITEM(rest, i);
        Py_INCREF(entry);
        PyObject *r = PyObject_CallMethodOneArg(PyTuple_GET_ITEM(entry, 0), TEST_NAME, v);
        int accepted = r == NULL ? -1 : PyObject_IsTrue(r);
        Py_XDECREF(r);
        if (accepted > 0) accepted = vec_push(hits, PyTuple_GET_ITEM(entry, 1)) < 0 ? -1 : 0;
        Py_DECREF(entry);
        if (accepted < 0) return -1;
    }
    return 0;
}

/* ---- the automaton run (walk.py's match_python) ------------------------------------------ */

/* The states still to run. With thousands of rules they are scattered over a large heap
 * and each is a cache miss, so pushing one does not touch it: the stack holds borrowed
 * pointers, kept alive by strong references to the tuples (or states) they came from in
 * `keep`, and asks the CPU to fetch the state's slot meanwhile. */
typedef struct {
    Vec states;  /* borrowed */
    Vec keep;    /* owned */
} Stack;

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch((const void *)(p))
#else
#define PREFETCH(p) ((void)(p))
#endif

static int stack_add(Stack *stack, PyObject *state) {  /* `state` must be kept alive */
    Vec *v = &stack->states;
    if (v->n == v->cap) {  /* grow as vec_push does, without a new reference */
        if (vec_push(v, state) < 0) return -1;
        Py_DECREF(state);
    } else {
        v->items[v->n++] = state;
    }
    PREFETCH((char *)state + ctrans_offset);
    return 0;
}

static int push_states(Stack *stack, PyObject *states) {
    if (!PyTuple_CheckExact(states)) {
        PyErr_SetString(PyExc_TypeError, "states must be a tuple");
        return -1;
    }
    if (PyTuple_GET_SIZE(states) == 0) return 0;
    if (vec_push(&stack->keep, states) < 0) return -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(states); i++)
        if (stack_add(stack, PyTuple_GET_ITEM(states, i)) < 0) return -1;
    return 0;
}

/* Move what the Python probes found (appended to `pyhits`) into `hits`, emptying the list. */
static int take_py_hits(Vec *hits, PyObject *pyhits) {
    if (pyhits == NULL || PyList_GET_SIZE(pyhits) == 0) return 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pyhits); i++)
        if (vec_push(hits, PyList_GET_ITEM(pyhits, i)) < 0) return -1;
    return PyList_SetSlice(pyhits, 0, PyList_GET_SIZE(pyhits), NULL);
}

/* Push the states of all hits, each once (a state is reached twice only through one field). */
static int push_unique(Stack *stack, Vec *hits) {
    if (hits->n == 1) return push_states(stack, hits->items[0]);
    Py_ssize_t base = stack->states.n, total = 0;
    for (Py_ssize_t h = 0; h < hits->n; h++) {
        if (!PyTuple_CheckExact(hits->items[h])) {
            PyErr_SetString(PyExc_TypeError, "states must be a tuple");
            return -1;
        }
        total += PyTuple_GET_SIZE(hits->items[h]);
        if (vec_push(&stack->keep, hits->items[h]) < 0) return -1;
    }
    PyObject *seen = NULL;
    if (total > 48 && (seen = PySet_New(NULL)) == NULL) return -1;
    for (Py_ssize_t h = 0; h < hits->n; h++) {
        PyObject *states = hits->items[h];
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(states); i++) {
            PyObject *s = PyTuple_GET_ITEM(states, i);
            int dup = 0;
            if (seen != NULL) {
                dup = PySet_Contains(seen, s);
                if (dup == 0 && PySet_Add(seen, s) < 0) dup = -1;
                if (dup < 0) { Py_DECREF(seen); return -1; }
            } else {
                for (Py_ssize_t j = base; j < stack->states.n; j++)
                    if (stack->states.items[j] == s) { dup = 1; break; }
            }
            if (!dup && stack_add(stack, s) < 0) { Py_XDECREF(seen); return -1; }
        }
    }
    Py_XDECREF(seen);
    return 0;
}

static PyObject *state_slot(PyObject *state, Py_ssize_t offset) {
    if (Py_TYPE(state) != StateType) {
        PyErr_SetString(PyExc_TypeError, "expected a cbuild.CState");
        return NULL;
    }
    PyObject *value = *(PyObject **)((char *)state + offset);
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "CState slot not set");
        return NULL;
    }
    Py_INCREF(value);
    return value;
}

/* Whether a dict holding the key k finds it for v: what dict.get does, for one key. */
static int key_equals(PyObject *k, PyObject *v) {
    if (k == v) return 1;
    if (PyUnicode_CheckExact(k) && PyUnicode_CheckExact(v)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(k);
        return n == PyUnicode_GET_LENGTH(v) && PyUnicode_KIND(k) == PyUnicode_KIND(v)
               && memcmp(PyUnicode_DATA(k), PyUnicode_DATA(v), n * PyUnicode_KIND(k)) == 0;
    }
    Py_hash_t hv = PyObject_Hash(v);
    if (hv == -1) return -1;  /* unhashable: the lookup raises too */
    Py_hash_t hk = PyObject_Hash(k);
    if (hk == -1) return -1;
    if (hk != hv) return 0;
    return PyObject_RichCompareBool(k, v, Py_EQ);
}

/* ---- packed fields: one field's lookup tables in one block -------------------------------
 *
 * At 10,000 rules most of the time went to cache misses: probing one field read its spec
 * tuple, then a dict object, its keys, a tuple of lengths, allocated an int per probed
 * hash... `pack(spec)` copies what this engine probes itself into one allocation: a single
 * open-addressing table for every exact value, prefix, suffix, case-insensitive form, IPv4
 * block and wildcard head and tail (each tagged with its kind), the lengths to probe, and
 * the range bounds as doubles. Keys and payloads stay the spec's objects (borrowed: the pack
 * holds the spec, whose tables are never changed after FieldIndex.rebuild). What it does
 * not do itself it hands to the same functions as above, with the spec. */

enum { K_EXACT = 1, K_PREFIX, K_SUFFIX, K_CI_EXACT, K_CI_PREFIX, K_CI_SUFFIX, K_CIDR4, K_WHEAD, K_WTAIL };
enum { L_PREFIX, L_SUFFIX, L_CI_PREFIX, L_CI_SUFFIX, L_WHEAD, L_CIDR, L_COUNT };
enum {
    F_EXACT = 1, F_PREFIX = 2, F_SUFFIX = 4, F_CI = 8, F_CI_EXACT = 16, F_CIDR = 32, F_WILD = 64,
    F_RANGES_FAST = 128, F_RANGES = 256, F_GENERIC = 512, F_RANGES_SCAN = 1024,
    F_PRESENT = 4096,
};

typedef struct {
    uint64_t tag;    /* mix(hash, kind) */
    uint32_t entry;  /* index + 1; 0: empty */
} Slot;

typedef struct {
    PyObject *key;      /* borrowed: the string to confirm (affixes, wildcard head), the exact value */
    PyObject *key2;     /* K_WTAIL: the tail */
    PyObject *payload;  /* a tuple of states; CI: a list of (condition, states); K_WTAIL: ((segments, states), ...) */
    uint64_t number;    /* K_CIDR4: the network */
    int32_t kind, size; /* size: key length (K_CIDR4: the shift) */
    int32_t aux, naux;  /* K_WHEAD: its tail lengths, ints[aux .. aux + naux) */
} Entry;

typedef struct {  /* what most probes read first comes first (one cache line) */
    PyObject_VAR_HEAD
    uint32_t flags, mask;
    uint64_t *filter;  /* a blocked Bloom filter of the tags: most probes find nothing, and */
    uint32_t fmask;    /* this (small, next to the header) says so without touching `slots` */
    Slot *slots;
    int32_t *ints;
    int32_t lens_off[L_COUNT];
    int32_t lens_n[L_COUNT];
    Entry *entries;
    double *bounds;
    Py_ssize_t n_bounds;
    PyObject *spec;                          /* strong */
    PyObject *present, *absent, *segments;   /* borrowed from spec */
    char data[1];
} Pack;

static inline uint64_t mix(uint64_t h, int kind) {  /* splitmix64's finalizer */
    uint64_t z = h + (uint64_t)kind * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t wtail_tag(uint64_t head, uint64_t tail) { return mix(head ^ mix(tail, 17), K_WTAIL); }
static inline uint64_t cidr_tag(uint64_t network, int shift) { return mix(network * 131 + (uint64_t)shift, K_CIDR4); }

static uint64_t fnv(PyObject *s, int from_end) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    uint64_t h = FNV_OFFSET;
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= PyUnicode_READ(kind, data, from_end ? n - 1 - i : i);
        h *= FNV_PRIME;
    }
    return h;
}

static void pack_dealloc(Pack *p) {
    Py_XDECREF(p->spec);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyTypeObject PackType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bus.patterns._cengine.Pack",
    .tp_basicsize = offsetof(Pack, data),
    .tp_itemsize = 1,
    .tp_dealloc = (destructor)pack_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One field's lookup tables, packed for the compiled engine (see pack()).",
};

/* Building: a first pass counts (p == NULL), the second fills. */
typedef struct {
    Pack *p;
    Py_ssize_t n_entries, n_ints;
} Builder;

static inline uint64_t filter_bits(uint64_t tag) {
    return ((uint64_t)1 << ((tag >> 52) & 63)) | ((uint64_t)1 << ((tag >> 58) & 63));
}

static inline int maybe_in(const Pack *p, uint64_t tag) {
    uint64_t bits = filter_bits(tag);
    return (p->filter[(tag >> 20) & p->fmask] & bits) == bits;
}

static Entry *add_entry(Builder *b, int kind, uint64_t tag) {
    Py_ssize_t i = b->n_entries++;
    if (b->p == NULL) return NULL;
    Pack *p = b->p;
    p->filter[(tag >> 20) & p->fmask] |= filter_bits(tag);
    uint32_t s = (uint32_t)(tag & p->mask);
    while (p->slots[s].entry) s = (s + 1) & p->mask;
    p->slots[s].tag = tag;
    p->slots[s].entry = (uint32_t)(i + 1);
    Entry *e = &p->entries[i];
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    return e;
}

static int add_ints(Builder *b, PyObject *lens, int32_t *off, int32_t *n) {
    if (!PyTuple_CheckExact(lens)) { PyErr_SetString(PyExc_TypeError, "lens must be a tuple"); return -1; }
    Py_ssize_t k = PyTuple_GET_SIZE(lens);
    if (b->p != NULL) {
        *off = (int32_t)b->n_ints;
        *n = (int32_t)k;
        for (Py_ssize_t i = 0; i < k; i++) {
            long x = PyLong_AsLong(PyTuple_GET_ITEM(lens, i));
            if (x == -1 && PyErr_Occurred()) return -1;
            if (x < 0 || x > INT32_MAX) { PyErr_SetString(PyExc_ValueError, "bad length"); return -1; }
            b->p->ints[b->n_ints + i] = (int32_t)x;
        }
    }
    b->n_ints += k;
    return 0;
}

/* A cbuild._affix_hashes table: {fnv: ((key, payload), ...)}. */
static int add_hashed(Builder *b, PyObject *table, int kind) {
    if (!PyDict_CheckExact(table)) { PyErr_SetString(PyExc_TypeError, "affix table must be a dict"); return -1; }
    Py_ssize_t pos = 0;
    PyObject *h, *candidates;
    while (PyDict_Next(table, &pos, &h, &candidates)) {
        uint64_t hv = PyLong_AsUnsignedLongLong(h);
        if (hv == (uint64_t)-1 && PyErr_Occurred()) return -1;
        if (!PyTuple_CheckExact(candidates)) { PyErr_SetString(PyExc_TypeError, "bad affix table"); return -1; }
        for (Py_ssize_t c = 0; c < PyTuple_GET_SIZE(candidates); c++) {
            PyObject *item = PyTuple_GET_ITEM(candidates, c);
            if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2 || !PyUnicode_CheckExact(PyTuple_GET_ITEM(item, 0))) {
                PyErr_SetString(PyExc_TypeError, "bad affix entry");
                return -1;
            }
            Entry *e = add_entry(b, kind, mix(hv, kind));
            if (e != NULL) {
                e->key = PyTuple_GET_ITEM(item, 0);
                e->size = (int32_t)PyUnicode_GET_LENGTH(e->key);
                e->payload = PyTuple_GET_ITEM(item, 1);
            }
        }
    }
    return 0;
}

static int fill_pack(Builder *b, PyObject *spec) {
    Pack *p = b->p;
    uint32_t flags = 0;
    PyObject *exact = PyTuple_GET_ITEM(spec, S_EXACT);
    if (!PyDict_CheckExact(exact)) { PyErr_SetString(PyExc_TypeError, "exact must be a dict"); return -1; }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(exact, &pos, &key, &value)) {
        Py_hash_t hv = PyObject_Hash(key);
        if (hv == -1) return -1;
        Entry *e = add_entry(b, K_EXACT, mix((uint64_t)hv, K_EXACT));
        if (e != NULL) { e->key = key; e->payload = value; }
        flags |= F_EXACT;
    }
    static const int tables[][3] = {  /* spec item, kind, lens (-1: none) */
        {S_PREFIX, K_PREFIX, L_PREFIX}, {S_SUFFIX, K_SUFFIX, L_SUFFIX}, {S_CI_EXACT, K_CI_EXACT, -1},
        {S_CI_PREFIX, K_CI_PREFIX, L_CI_PREFIX}, {S_CI_SUFFIX, K_CI_SUFFIX, L_CI_SUFFIX},
    };
    static const int lens_items[] = {S_PREFIX_LENS, S_SUFFIX_LENS, S_CI_PREFIX_LENS, S_CI_SUFFIX_LENS};
    for (int t = 0; t < 5; t++) {
        PyObject *table = PyTuple_GET_ITEM(spec, tables[t][0]);
        Py_ssize_t before = b->n_entries;
        if (add_hashed(b, table, tables[t][1]) < 0) return -1;
        if (b->n_entries > before) flags |= t == 0 ? F_PREFIX : t == 1 ? F_SUFFIX : t == 2 ? F_CI_EXACT : 0;
        int l = tables[t][2];
        if (l >= 0) {
            int32_t off = 0, n = 0;
            if (add_ints(b, PyTuple_GET_ITEM(spec, lens_items[l]), &off, &n) < 0) return -1;
            if (p != NULL) { p->lens_off[l] = off; p->lens_n[l] = n; }
        }
    }
    if (PyTuple_GET_ITEM(spec, S_HAS_CI) == Py_True) flags |= F_CI;
    /* IPv4 blocks; IPv6 addresses go to the Python probe (as probe_cidr does). */
    PyObject *blocks = PyTuple_GET_ITEM(spec, S_CIDR);
    if (!PyTuple_CheckExact(blocks)) { PyErr_SetString(PyExc_TypeError, "bad cidr blocks"); return -1; }
    if (PyTuple_GET_SIZE(blocks) > 0) flags |= F_CIDR;
    Py_ssize_t shifts_start = b->n_ints, n_shifts = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(blocks); i++) {
        PyObject *block = PyTuple_GET_ITEM(blocks, i);
        if (!PyTuple_CheckExact(block) || PyTuple_GET_SIZE(block) != 3 || !PyDict_CheckExact(PyTuple_GET_ITEM(block, 2))) {
            PyErr_SetString(PyExc_TypeError, "bad cidr block");
            return -1;
        }
        long version = PyLong_AsLong(PyTuple_GET_ITEM(block, 0));
        long shift = PyLong_AsLong(PyTuple_GET_ITEM(block, 1));
        if ((version == -1 || shift == -1) && PyErr_Occurred()) return -1;
        if (version != 4 || shift < 0 || shift > 32) continue;
        if (p != NULL) p->ints[b->n_ints] = (int32_t)shift;
        b->n_ints++;
        n_shifts++;
        pos = 0;
        while (PyDict_Next(PyTuple_GET_ITEM(block, 2), &pos, &key, &value)) {
            uint64_t network = PyLong_AsUnsignedLongLong(key);
            if (network == (uint64_t)-1 && PyErr_Occurred()) return -1;
            Entry *e = add_entry(b, K_CIDR4, cidr_tag(network, (int)shift));
            if (e != NULL) { e->number = network; e->size = (int32_t)shift; e->payload = value; }
        }
    }
    if (p != NULL) { p->lens_off[L_CIDR] = (int32_t)shifts_start; p->lens_n[L_CIDR] = (int32_t)n_shifts; }
    /* Wildcards: {head: (tail lens, {tail: ((segments, states), ...)})}. */
    PyObject *wild = PyTuple_GET_ITEM(spec, S_WILD);
    if (!PyDict_CheckExact(wild)) { PyErr_SetString(PyExc_TypeError, "bad wildcard table"); return -1; }
    if (PyDict_GET_SIZE(wild) > 0) flags |= F_WILD;
    {
        int32_t off = 0, n = 0;
        if (add_ints(b, PyTuple_GET_ITEM(spec, S_WILD_HEAD_LENS), &off, &n) < 0) return -1;
        if (p != NULL) { p->lens_off[L_WHEAD] = off; p->lens_n[L_WHEAD] = n; }
    }
    pos = 0;
    while (PyDict_Next(wild, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key) || !PyTuple_CheckExact(value) || PyTuple_GET_SIZE(value) != 2
            || !PyDict_CheckExact(PyTuple_GET_ITEM(value, 1))) {
            PyErr_SetString(PyExc_TypeError, "bad wildcard entry");
            return -1;
        }
        uint64_t head = fnv(key, 0);
        Entry *e = add_entry(b, K_WHEAD, mix(head, K_WHEAD));
        int32_t off = 0, n = 0;
        if (add_ints(b, PyTuple_GET_ITEM(value, 0), &off, &n) < 0) return -1;
        if (e != NULL) { e->key = key; e->size = (int32_t)PyUnicode_GET_LENGTH(key); e->aux = off; e->naux = n; }
        Py_ssize_t tpos = 0;
        PyObject *tail, *group;
        while (PyDict_Next(PyTuple_GET_ITEM(value, 1), &tpos, &tail, &group)) {
            if (!PyUnicode_CheckExact(tail) || !PyTuple_CheckExact(group)) {
                PyErr_SetString(PyExc_TypeError, "bad wildcard tail");
                return -1;
            }
            Entry *te = add_entry(b, K_WTAIL, wtail_tag(head, fnv(tail, 1)));
            if (te != NULL) { te->key = key; te->key2 = tail; te->size = (int32_t)PyUnicode_GET_LENGTH(tail); te->payload = group; }
        }
    }
    /* Numeric ranges. */
    PyObject *bounds = PyTuple_GET_ITEM(spec, S_BOUNDS), *packed = PyTuple_GET_ITEM(spec, S_BOUNDS_DOUBLES);
    Py_ssize_t n_bounds = 0;
    if (bounds != Py_None) {
        if (!PyList_CheckExact(bounds) || !PyList_CheckExact(PyTuple_GET_ITEM(spec, S_SEGMENTS))
            || PyList_GET_SIZE(PyTuple_GET_ITEM(spec, S_SEGMENTS)) != 2 * PyList_GET_SIZE(bounds) + 1) {
            PyErr_SetString(PyExc_TypeError, "bad ranges");
            return -1;
        }
        flags |= F_RANGES;
        n_bounds = PyList_GET_SIZE(bounds);
        if (packed != Py_None && PyBytes_CheckExact(packed) && PyBytes_GET_SIZE(packed) == n_bounds * (Py_ssize_t)sizeof(double))
            flags |= F_RANGES_FAST;
    }
    /* What is left to the spec's Python probes (see probe_generic). */
    int negations = PyTuple_GET_SIZE(PyTuple_GET_ITEM(spec, S_NEGATIONS)) > 0;
    PyObject *rest = PyTuple_GET_ITEM(spec, S_REST);
    if (!PyTuple_CheckExact(rest)) { PyErr_SetString(PyExc_TypeError, "bad rest"); return -1; }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(rest); i++) {
        PyObject *entry = PyTuple_GET_ITEM(rest, i);
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2 || !PyTuple_CheckExact(PyTuple_GET_ITEM(entry, 1))) {
            PyErr_SetString(PyExc_TypeError, "bad rest entry");
            return -1;
        }
    }
    if (negations || PyTuple_GET_SIZE(rest) > 0) flags |= F_GENERIC;
    if (PyTuple_GET_ITEM(spec, S_PROBE_RANGES) != Py_None) flags |= F_RANGES_SCAN;
    if (PyTuple_GET_SIZE(PyTuple_GET_ITEM(spec, S_PRESENT)) > 0) flags |= F_PRESENT;
    if (p != NULL) {
        p->flags = flags;
        p->n_bounds = (flags & F_RANGES_FAST) ? n_bounds : 0;
        if (flags & F_RANGES_FAST) memcpy(p->bounds, PyBytes_AS_STRING(packed), n_bounds * sizeof(double));
        p->segments = (flags & F_RANGES) ? PyTuple_GET_ITEM(spec, S_SEGMENTS) : NULL;
        p->present = PyTuple_GET_ITEM(spec, S_PRESENT);
        p->absent = PyTuple_GET_ITEM(spec, S_ABSENT);
    }
    return 0;
}

static PyObject *pack(PyObject *module, PyObject *spec) {
    if (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != S_SIZE
        || !PyTuple_CheckExact(PyTuple_GET_ITEM(spec, S_PRESENT)) || !PyTuple_CheckExact(PyTuple_GET_ITEM(spec, S_ABSENT))) {
        PyErr_SetString(PyExc_TypeError, "pack(spec): a field spec tuple (cbuild.field_spec)");
        return NULL;
    }
    Builder b = {NULL, 0, 0};
    if (fill_pack(&b, spec) < 0) return NULL;
    Py_ssize_t n_entries = b.n_entries, n_ints = b.n_ints, n_bounds = 0;
    PyObject *bounds = PyTuple_GET_ITEM(spec, S_BOUNDS), *packed = PyTuple_GET_ITEM(spec, S_BOUNDS_DOUBLES);
    if (bounds != Py_None && packed != Py_None && PyBytes_CheckExact(packed))
        n_bounds = PyBytes_GET_SIZE(packed) / (Py_ssize_t)sizeof(double);
    if (n_entries >= (1 << 30)) { PyErr_SetString(PyExc_OverflowError, "too many entries"); return NULL; }
    uint32_t cap = 8, words = 1;
    while (cap < 2 * (uint32_t)n_entries) cap *= 2;
    while ((uint64_t)words * 64 < 8 * (uint64_t)n_entries) words *= 2;  /* ~8 bits per entry: ~2% false hits */
    Py_ssize_t size = words * sizeof(uint64_t) + cap * sizeof(Slot) + n_entries * sizeof(Entry)
                      + n_bounds * sizeof(double) + n_ints * sizeof(int32_t);
    Pack *p = PyObject_NewVar(Pack, &PackType, size);
    if (p == NULL) return NULL;
    char *data = p->data;
    memset(data, 0, size);
    p->spec = NULL;
    /* data is pointer-aligned (it follows pointer-sized fields); Slot and Entry keep it 8-aligned */
    p->filter = (uint64_t *)data;
    p->fmask = words - 1;
    p->slots = (Slot *)(data + words * sizeof(uint64_t));
    p->entries = (Entry *)((char *)p->slots + cap * sizeof(Slot));
    p->bounds = (double *)((char *)p->entries + n_entries * sizeof(Entry));
    p->ints = (int32_t *)((char *)p->bounds + n_bounds * sizeof(double));
    p->mask = cap - 1;
    p->flags = 0;
    p->n_bounds = 0;
    p->present = p->absent = p->segments = NULL;
    memset(p->lens_off, 0, sizeof(p->lens_off));
    memset(p->lens_n, 0, sizeof(p->lens_n));
    Py_INCREF(spec);
    p->spec = spec;
    Builder fill = {p, 0, 0};
    if (fill_pack(&fill, spec) < 0 || fill.n_entries != n_entries || fill.n_ints != n_ints) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "pack: the spec changed while packing");
        Py_DECREF(p);
        return NULL;
    }
    return (PyObject *)p;
}

/* Probing a packed field. */
#define FOR_TAG(P, T, E)                                                                      \
    if (maybe_in((P), (T)))                                                                   \
    for (uint32_t _s = (uint32_t)((T) & (P)->mask); (P)->slots[_s].entry; _s = (_s + 1) & (P)->mask) \
        if ((P)->slots[_s].tag == (T) && ((E) = &(P)->entries[(P)->slots[_s].entry - 1]))

static int push_payload(Vec *hits, Entry *e, int group) {
    if (!group) return vec_push(hits, e->payload);
    if (!PyList_CheckExact(e->payload)) { PyErr_SetString(PyExc_TypeError, "bad group"); return -1; }
    for (Py_ssize_t g = 0; g < PyList_GET_SIZE(e->payload); g++)
        if (vec_push(hits, PyTuple_GET_ITEM(PyList_GET_ITEM(e->payload, g), 1)) < 0) return -1;
    return 0;
}

static int packed_affix(Vec *hits, Pack *p, int kind, int lens, PyObject *v, int suffix, int fold, int group) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(v), hashed = 0;
    int ukind = PyUnicode_KIND(v);
    const void *data = PyUnicode_DATA(v);
    uint64_t h = FNV_OFFSET;
    int whole = lens < 0;
    Py_ssize_t count = whole ? 1 : p->lens_n[lens];
    const int32_t *sizes = whole ? NULL : p->ints + p->lens_off[lens];
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t size = whole ? n : sizes[i];
        if (size > n) break;
        for (; hashed < size; hashed++) {
            h ^= folded(PyUnicode_READ(ukind, data, suffix ? n - 1 - hashed : hashed), fold);
            h *= FNV_PRIME;
        }
        uint64_t tag = mix(h, kind);
        Entry *e;
        FOR_TAG(p, tag, e) {
            if (e->kind == kind && affix_equals(e->key, v, suffix ? n - size : 0, size, fold)
                && push_payload(hits, e, group) < 0)
                return -1;
        }
    }
    return 0;
}

static int packed_exact(Vec *hits, Pack *p, PyObject *v) {
    Py_hash_t hv = PyObject_Hash(v);
    if (hv == -1) return -1;
    uint64_t tag = mix((uint64_t)hv, K_EXACT);
    Entry *e;
    FOR_TAG(p, tag, e) {
        if (e->kind != K_EXACT) continue;
        int eq = key_equals(e->key, v);
        if (eq < 0) return -1;
        if (eq) return vec_push(hits, e->payload);  /* dict keys are unique */
    }
    return 0;
}

static int packed_cidr(Vec *hits, Pack *p, PyObject *field, PyObject *v, PyObject **pyhits) {
    uint32_t address;
    int parsed = parse_ipv4(v, &address);
    if (parsed == 0) return 0;
    if (parsed < 0) {  /* IPv6, or nothing: parse_ip and the Python probe decide */
        if (PyUnicode_FindChar(v, ':', 0, PyUnicode_GET_LENGTH(v), 1) < 0) return 0;
        return call_probe(PyTuple_GET_ITEM(p->spec, S_PROBE_CIDR), field, v, pyhits);
    }
    const int32_t *shifts = p->ints + p->lens_off[L_CIDR];
    for (int32_t i = 0; i < p->lens_n[L_CIDR]; i++) {
        uint64_t network = (uint64_t)address >> shifts[i];
        uint64_t tag = cidr_tag(network, shifts[i]);
        Entry *e;
        FOR_TAG(p, tag, e) {
            if (e->kind == K_CIDR4 && e->number == network && e->size == shifts[i] && vec_push(hits, e->payload) < 0)
                return -1;
        }
    }
    return 0;
}

static int packed_wild(Vec *hits, Pack *p, PyObject *v) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(v), hashed = 0;
    int ukind = PyUnicode_KIND(v);
    const void *data = PyUnicode_DATA(v);
    uint64_t h = FNV_OFFSET;
    const int32_t *sizes = p->ints + p->lens_off[L_WHEAD];
    for (int32_t i = 0; i < p->lens_n[L_WHEAD]; i++) {
        Py_ssize_t size = sizes[i];
        if (size > n) break;
        for (; hashed < size; hashed++) {
            h ^= PyUnicode_READ(ukind, data, hashed);
            h *= FNV_PRIME;
        }
        uint64_t tag = mix(h, K_WHEAD);
        Entry *e;
        FOR_TAG(p, tag, e) {
            if (e->kind != K_WHEAD || !affix_equals(e->key, v, 0, size, 0)) continue;
            uint64_t t = FNV_OFFSET;
            Py_ssize_t tail_hashed = 0;
            const int32_t *tails = p->ints + e->aux;
            for (int32_t j = 0; j < e->naux; j++) {
                Py_ssize_t tail_size = tails[j];
                if (tail_size > n) break;
                for (; tail_hashed < tail_size; tail_hashed++) {
                    t ^= PyUnicode_READ(ukind, data, n - 1 - tail_hashed);
                    t *= FNV_PRIME;
                }
                uint64_t tag2 = wtail_tag(h, t);
                Entry *te;
                FOR_TAG(p, tag2, te) {
                    if (te->kind != K_WTAIL || te->key != e->key || !affix_equals(te->key2, v, n - tail_size, tail_size, 0))
                        continue;
                    PyObject *group = te->payload;
                    for (Py_ssize_t g = 0; g < PyTuple_GET_SIZE(group); g++) {
                        PyObject *item = PyTuple_GET_ITEM(group, g);
                        int m = glob_match(v, PyTuple_GET_ITEM(item, 0));
                        if (m < 0 || (m && vec_push(hits, PyTuple_GET_ITEM(item, 1)) < 0)) return -1;
                    }
                }
            }
        }
    }
    return 0;
}

static int packed_ranges(Vec *hits, Pack *p, PyObject *v) {
    double d;
    int fast = (p->flags & F_RANGES_FAST) ? exact_double(v, &d) : 0;
    if (fast < 0) return -1;
    if (!fast) return ranges_by_objects(hits, p->spec, v);
    Py_ssize_t lo = 0, hi = p->n_bounds, n = hi;
    while (lo < hi) {  /* bisect_left on exact doubles (NaN is never less, as in Python) */
        Py_ssize_t mid = (lo + hi) / 2;
        if (p->bounds[mid] < d) lo = mid + 1; else hi = mid;
    }
    Py_ssize_t cell = 2 * lo + (lo < n && p->bounds[lo] == d);
    PyObject *states = PyList_GET_ITEM(p->segments, cell);
    return PyTuple_GET_SIZE(states) ? vec_push(hits, states) : 0;
}

static int probe_packed(Vec *hits, Pack *p, PyObject *field, PyObject *v, PyObject **pyhits) {
    uint32_t flags = p->flags;
    if ((flags & F_EXACT) && packed_exact(hits, p, v) < 0) return -1;
    if (PyUnicode_CheckExact(v)) {
        if ((flags & F_PREFIX) && packed_affix(hits, p, K_PREFIX, L_PREFIX, v, 0, 0, 0) < 0) return -1;
        if ((flags & F_SUFFIX) && packed_affix(hits, p, K_SUFFIX, L_SUFFIX, v, 1, 0, 0) < 0) return -1;
        if (flags & F_CI) {
            if (!PyUnicode_IS_ASCII(v)) {
                if (call_probe(PyTuple_GET_ITEM(p->spec, S_PROBE_CI), field, v, pyhits) < 0) return -1;
            } else if (((flags & F_CI_EXACT) && packed_affix(hits, p, K_CI_EXACT, -1, v, 0, 1, 1) < 0)
                       || (p->lens_n[L_CI_PREFIX] && packed_affix(hits, p, K_CI_PREFIX, L_CI_PREFIX, v, 0, 1, 1) < 0)
                       || (p->lens_n[L_CI_SUFFIX] && packed_affix(hits, p, K_CI_SUFFIX, L_CI_SUFFIX, v, 1, 1, 1) < 0)) {
                return -1;
            }
        }
        if ((flags & F_CIDR) && packed_cidr(hits, p, field, v, pyhits) < 0) return -1;
        if ((flags & F_WILD) && packed_wild(hits, p, v) < 0) return -1;
        if (flags & F_GENERIC) return probe_generic(hits, p->spec, field, v, pyhits);
        return 0;
    }
    if (PyLong_CheckExact(v) || PyFloat_CheckExact(v)) {
        if ((flags & F_RANGES) && packed_ranges(hits, p, v) < 0) return -1;
        if ((flags & F_RANGES_SCAN) && call_probe(PyTuple_GET_ITEM(p->spec, S_PROBE_RANGES), field, v, pyhits) < 0)
            return -1;
        if (flags & F_GENERIC) return probe_generic(hits, p->spec, field, v, pyhits);
        return 0;
    }
    if (flags & F_GENERIC) return probe_generic(hits, p->spec, field, v, pyhits);
    return 0;
}

static int run_state(PyObject *state, PyObject **flat, Py_ssize_t n_paths, const Multi *multi,
                     PyObject *found, Stack *stack, Vec *hits, PyObject **pyhits) {
    PyObject *ctrans = state_slot(state, ctrans_offset);
    if (ctrans == NULL) return -1;
    int rc = -1;
    if (!PyTuple_CheckExact(ctrans) || PyTuple_GET_SIZE(ctrans) % 3 != 1
        || !PyTuple_CheckExact(PyTuple_GET_ITEM(ctrans, 0))) {
        PyErr_SetString(PyExc_TypeError, "bad ctrans");
        goto done;
    }
    PyObject *rules = PyTuple_GET_ITEM(ctrans, 0);
    if (PyTuple_GET_SIZE(rules) > 0) {
        Py_ssize_t end = PyList_GET_SIZE(found);
        if (PyList_SetSlice(found, end, end, rules) < 0) goto done;
    }
    for (Py_ssize_t t = 1; t < PyTuple_GET_SIZE(ctrans); t += 3) {
        Py_ssize_t pid = PyLong_AsSsize_t(PyTuple_GET_ITEM(ctrans, t));
        if (pid == -1 && PyErr_Occurred()) goto done;
        if (pid < 0 || pid >= n_paths) {
            PyErr_SetString(PyExc_ValueError, "bad transition");
            goto done;
        }
        PyObject *what = PyTuple_GET_ITEM(ctrans, t + 1), *then = PyTuple_GET_ITEM(ctrans, t + 2);
        PyObject *v = flat[pid];
        if (Py_TYPE(what) != &PackType) {  /* one exact value: `then` is its state or states */
            if (v == NULL) continue;
            int any = 0;
            if (PyList_CheckExact(v)) {
                for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v) && !any; i++)
                    if ((any = key_equals(what, PyList_GET_ITEM(v, i))) < 0) goto done;
            } else if ((any = key_equals(what, v)) < 0) {
                goto done;
            }
            if (any && Py_TYPE(then) == StateType) {
                if (vec_push(&stack->keep, then) < 0 || stack_add(stack, then) < 0) goto done;
            } else if (any && push_states(stack, then) < 0) {
                goto done;
            }
            continue;
        }
        Pack *p = (Pack *)what;  /* `then` is the FieldIndex, for the Python probes */
        if (v == NULL) {
            if (push_states(stack, p->absent) < 0) goto done;
            continue;
        }
        vec_clear(hits);
        if ((p->flags & F_PRESENT) && vec_push(hits, p->present) < 0) goto done;
        if (PyList_CheckExact(v)) {
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v); i++)
                if (probe_packed(hits, p, then, PyList_GET_ITEM(v, i), pyhits) < 0) goto done;
        } else if (probe_packed(hits, p, then, v, pyhits) < 0) {
            goto done;
        }
        if (take_py_hits(hits, *pyhits) < 0) goto done;
        /* Under an array of objects one element may lack the field even though another has
         * it: follow the absence branch and let the exact evaluator decide. */
        if (PyTuple_GET_SIZE(p->absent) > 0 && in_multi_set(multi, pid) && vec_push(hits, p->absent) < 0)
            goto done;
        if (hits->n > 0 && push_unique(stack, hits) < 0) goto done;
    }
    rc = 0;
done:
    Py_DECREF(ctrans);
    return rc;
}

static PyObject *match(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "match(event, trie, n_paths, root[, dots])");
        return NULL;
    }
    int dots = 1;  /* look for dotted names on mentioned paths; if one is there, answer None */
    if (nargs == 5 && (dots = PyObject_IsTrue(args[4])) < 0) return NULL;
    PyObject *event = args[0], *trie = args[1], *root = args[3];
    Py_ssize_t n_paths = PyLong_AsSsize_t(args[2]);
    if (n_paths == -1 && PyErr_Occurred()) return NULL;
    if (TRUE_KEY == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "call setup(...) first");
        return NULL;
    }
    if (!PyDict_CheckExact(event) || !PyTuple_CheckExact(trie) || n_paths < 0) {
        PyErr_SetString(PyExc_TypeError, "match(event: dict, trie: tuple, n_paths: int >= 0, root)");
        return NULL;
    }
    PyObject **flat = PyMem_Calloc(n_paths ? n_paths : 1, sizeof(PyObject *));
    if (flat == NULL) return PyErr_NoMemory();
    PyObject *multi_set = NULL, *found = NULL, *pyhits = NULL, *result = NULL;
    uint64_t small_bits[16] = {0};
    Multi multi = {n_paths <= 16 * 64 ? small_bits : PyMem_Calloc(n_paths / 64 + 1, sizeof(uint64_t)), 0, dots, 0};
    if (multi.bits == NULL) {
        PyMem_Free(flat);
        return PyErr_NoMemory();
    }
    Stack stack;
    Vec hits;
    vec_init(&stack.states);
    vec_init(&stack.keep);
    vec_init(&hits);
    if (walk_object(event, trie, flat, n_paths, &multi, 0) < 0) {
        if (multi.dotted && !PyErr_Occurred()) {
            Py_INCREF(Py_None);
            result = Py_None;
        }
        goto done;
    }
    if ((found = PyList_New(0)) == NULL || vec_push(&stack.keep, root) < 0 || stack_add(&stack, root) < 0)
        goto done;
    while (stack.states.n > 0) {
        PyObject *state = stack.states.items[--stack.states.n];  /* alive through stack.keep */
        if (stack.states.n > 0) {  /* the next state's slot is (being) fetched: fetch its ctrans */
            PyObject *next = stack.states.items[stack.states.n - 1];
            if (Py_TYPE(next) == StateType) PREFETCH(*(PyObject **)((char *)next + ctrans_offset));
        }
        if (run_state(state, flat, n_paths, &multi, found, &stack, &hits, &pyhits) < 0) goto done;
    }
    if (multi.any) {
        if ((multi_set = PySet_New(NULL)) == NULL) goto done;
        for (Py_ssize_t pid = 0; pid < n_paths; pid++) {
            if (!in_multi_set(&multi, pid)) continue;
            PyObject *key = PyLong_FromSsize_t(pid);
            if (key == NULL) goto done;
            int r = PySet_Add(multi_set, key);
            Py_DECREF(key);
            if (r < 0) goto done;
        }
    }
    result = PyTuple_Pack(2, found, multi_set ? multi_set : Py_None);
done:
    stack.states.n = 0;  /* borrowed: nothing to release */
    vec_free(&stack.states);
    vec_free(&stack.keep);
    vec_free(&hits);
    for (Py_ssize_t i = 0; i < n_paths; i++) Py_XDECREF(flat[i]);
    PyMem_Free(flat);
    if (multi.bits != small_bits) PyMem_Free(multi.bits);
    Py_XDECREF(multi_set);
    Py_XDECREF(found);
    Py_XDECREF(pyhits);
    return result;
}

static int slot_offset(PyObject *descr, PyTypeObject *type, Py_ssize_t *offset) {
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type) || PyDescr_TYPE(descr) != type
        || ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
        PyErr_SetString(PyExc_TypeError, "expected a __slots__ member of the state type");
        return -1;
    }
    *offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    return 0;
}

static PyObject *setup(PyObject *module, PyObject *args) {
    PyObject *t, *f, *ctrans;
    PyTypeObject *type;
    if (!PyArg_ParseTuple(args, "OOO!O", &t, &f, &PyType_Type, &type, &ctrans)) return NULL;
    if (slot_offset(ctrans, type, &ctrans_offset) < 0) return NULL;
    Py_INCREF(t);
    Py_INCREF(f);
    Py_INCREF(type);
    Py_XSETREF(TRUE_KEY, t);
    Py_XSETREF(FALSE_KEY, f);
    Py_XSETREF(StateType, type);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"match", (PyCFunction)(void (*)(void))match, METH_FASTCALL,
     "match(event, trie, n_paths, root) -> (rule ids, multi path ids or None)"},
    {"pack", pack, METH_O, "pack(spec) -> Pack: one field's spec tuple (cbuild.field_spec) packed for match()"},
    {"setup", setup, METH_VARARGS,
     "setup(TRUE_KEY, FALSE_KEY, CState, CState.ctrans): the keys booleans are stored as, the state type"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "bus.patterns._cengine",
    "Compiled event walk and automaton run for bus.patterns (see bus/patterns/cbuild.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__cengine(void) {
    if (PyType_Ready(&PackType) < 0) return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    /* bus/patterns/engine.py uses this module only if it expects the same layout: a stale
     * build of an older layout is ignored rather than misread. */
    if (PyModule_AddIntConstant(module, "LAYOUT", LAYOUT) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    PyObject *names = PyTuple_New(S_SIZE);
    if (names == NULL) { Py_DECREF(module); return NULL; }
    for (int i = 0; i < S_SIZE; i++) {
        PyObject *name = PyUnicode_FromString(SPEC_NAMES[i]);
        if (name == NULL) { Py_DECREF(names); Py_DECREF(module); return NULL; }
        PyTuple_SET_ITEM(names, i, name);
    }
    if (PyModule_AddObject(module, "SPEC", names) < 0) {
        Py_DECREF(names);
        Py_DECREF(module);
        return NULL;
    }
    if (TEST_NAME == NULL && (TEST_NAME = PyUnicode_InternFromString("test")) == NULL) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
