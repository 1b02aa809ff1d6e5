// A thin extern "C" layer over Mapnik 3.1 for the Rust crate `mapnik-sys`.
//
// Conventions:
// * Every function that can fail returns 0 on success and -1 on failure; on
//   failure `*err` receives a malloc'ed, NUL-terminated message that the
//   caller frees with `tp_mapnik_free_string`.
// * No C++ exception ever leaves this file: every entry point catches
//   `std::exception` and `...` and turns them into an error message.
// * Buffers handed to Rust are malloc'ed and freed with `tp_mapnik_free_buffer`.

#include <mapnik/agg_renderer.hpp>
#include <mapnik/box2d.hpp>
#include <mapnik/datasource_cache.hpp>
#include <mapnik/debug.hpp>
#include <mapnik/font_engine_freetype.hpp>
#include <mapnik/image.hpp>
#include <mapnik/image_util.hpp>
#include <mapnik/image_view.hpp>
#include <mapnik/load_map.hpp>
#include <mapnik/map.hpp>
#include <mapnik/projection.hpp>
#include <mapnik/proj_transform.hpp>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <exception>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// Half the width of the EPSG:3857 world in metres, as mod_tile uses it.
constexpr double kMercHalf = 20037508.3428;

char *dup_string(std::string const &s) {
    char *out = static_cast<char *>(std::malloc(s.size() + 1));
    if (out != nullptr) {
        std::memcpy(out, s.data(), s.size());
        out[s.size()] = '\0';
    }
    return out;
}

void set_error(char **err, std::string const &msg) {
    if (err != nullptr) {
        *err = dup_string(msg.empty() ? std::string("unknown Mapnik error") : msg);
    }
}

// Runs `f`, converting any exception into an error message.
template <typename F>
int guarded(char **err, F &&f) {
    try {
        f();
        return 0;
    } catch (std::bad_alloc const &) {
        set_error(err, "out of memory");
    } catch (std::exception const &e) {
        set_error(err, e.what());
    } catch (...) {
        set_error(err, "unknown C++ exception");
    }
    return -1;
}

std::string join_lines(std::vector<std::string> const &items) {
    std::string out;
    for (auto const &item : items) {
        out += item;
        out += '\n';
    }
    return out;
}

// Whether a map in `srs` has degrees as units. Mapnik's is_geographic()
// only knows its well-known spellings (not "+proj=longlat ..."), so the
// world box is also transformed and checked for degree-sized numbers.
// Throws for an srs that PROJ cannot parse.
bool is_lonlat(std::string const &srs) {
    mapnik::projection map_proj(srs);
    if (map_proj.is_geographic()) {
        return true;
    }
    if (map_proj.well_known()) {
        return false;
    }
    mapnik::projection merc("epsg:3857");
    mapnik::proj_transform tr(merc, map_proj);
    mapnik::box2d<double> box(-kMercHalf / 2, -kMercHalf / 2, kMercHalf / 2, kMercHalf / 2);
    return tr.forward(box) && box.valid() && box.maxx() <= 180.0 && box.minx() >= -180.0 &&
           box.maxy() <= 90.0 && box.miny() >= -90.0;
}

// The image a metatile is drawn into, kept per thread and reused: a fresh
// 2048x2048 RGBA image is 16 MiB of new pages for every render (mmap, a
// page fault per 4 KiB, munmap), which costs a few percent of a cheap
// render. Reused, it is put back in the state of a new image: pixels zero
// (unless the map's background colour paints every pixel anyway), not
// premultiplied, not painted. Maps are used on one thread only, so a
// thread-local image is never shared.
mapnik::image_rgba8 &canvas(unsigned px, bool painted_by_background) {
    thread_local std::unique_ptr<mapnik::image_rgba8> image;
    if (!image || image->width() != px || image->height() != px) {
        image.reset();
        image = std::make_unique<mapnik::image_rgba8>(px, px);
        return *image;
    }
    if (!painted_by_background) {
        std::fill(image->begin(), image->end(), 0);
    }
    image->set_premultiplied(false);
    image->painted(false);
    return *image;
}

}  // namespace

struct tp_mapnik_map {
    mapnik::Map map;
    // Whether the map's srs is lon/lat (decided once, at load time).
    bool geographic = false;
    tp_mapnik_map() : map(256, 256) {}
};

// One encoded tile in a list handed to Rust.
struct tp_mapnik_buffer {
    unsigned char *data;
    size_t len;
};

extern "C" {

void tp_mapnik_free_string(char *s) { std::free(s); }

void tp_mapnik_free_buffers(tp_mapnik_buffer *bufs, size_t count) {
    if (bufs == nullptr) {
        return;
    }
    for (size_t i = 0; i < count; ++i) {
        std::free(bufs[i].data);
    }
    std::free(bufs);
}

// Sets Mapnik's global log severity: 0 debug, 1 warn, 2 error, 3 none.
// Mapnik writes its log to stderr.
void tp_mapnik_set_log_severity(int level) {
    mapnik::logger::severity_type sev = mapnik::logger::none;
    switch (level) {
    case 0:
        sev = mapnik::logger::debug;
        break;
    case 1:
        sev = mapnik::logger::warn;
        break;
    case 2:
        sev = mapnik::logger::error;
        break;
    default:
        break;
    }
    mapnik::logger::set_severity(sev);
}

// Registers the input plugins (*.input) found in `dir`. `*registered` is set
// to 1 if at least one new plugin was loaded.
int tp_mapnik_register_plugins(char const *dir, int recurse, int *registered, char **err) {
    return guarded(err, [&] {
        bool ok = mapnik::datasource_cache::instance().register_datasources(std::string(dir),
                                                                            recurse != 0);
        if (registered != nullptr) {
            *registered = ok ? 1 : 0;
        }
    });
}

// Newline-separated names of the registered input plugins.
int tp_mapnik_plugin_names(char **out, char **err) {
    return guarded(err, [&] {
        *out = dup_string(join_lines(mapnik::datasource_cache::instance().plugin_names()));
        if (*out == nullptr) {
            throw std::bad_alloc();
        }
    });
}

int tp_mapnik_register_fonts(char const *dir, int recurse, int *registered, char **err) {
    return guarded(err, [&] {
        bool ok = mapnik::freetype_engine::register_fonts(std::string(dir), recurse != 0);
        if (registered != nullptr) {
            *registered = ok ? 1 : 0;
        }
    });
}

// Newline-separated face names of the registered fonts.
int tp_mapnik_font_names(char **out, char **err) {
    return guarded(err, [&] {
        *out = dup_string(join_lines(mapnik::freetype_engine::face_names()));
        if (*out == nullptr) {
            throw std::bad_alloc();
        }
    });
}

// Creates a map from a style: `is_file` != 0 means `style` is a path to an
// XML file, otherwise it is the XML text itself. `base` (may be empty) is
// the base path for relative file names in the style.
int tp_mapnik_map_load(char const *style, size_t style_len, int is_file, char const *base,
                       size_t base_len, int strict, tp_mapnik_map **out, char **err) {
    return guarded(err, [&] {
        std::string s(style, style_len);
        std::string b(base, base_len);
        auto *m = new tp_mapnik_map();
        try {
            if (is_file != 0) {
                mapnik::load_map(m->map, s, strict != 0, b);
            } else {
                mapnik::load_map_string(m->map, s, strict != 0, b);
            }
            m->geographic = is_lonlat(m->map.srs());
        } catch (...) {
            delete m;
            throw;
        }
        *out = m;
    });
}

void tp_mapnik_map_free(tp_mapnik_map *m) { delete m; }

void tp_mapnik_map_set_buffer_size(tp_mapnik_map *m, int size) { m->map.set_buffer_size(size); }

int tp_mapnik_map_buffer_size(tp_mapnik_map const *m) { return m->map.buffer_size(); }

int tp_mapnik_map_srs(tp_mapnik_map const *m, char **out, char **err) {
    return guarded(err, [&] {
        *out = dup_string(m->map.srs());
        if (*out == nullptr) {
            throw std::bad_alloc();
        }
    });
}

// Renders the `size` x `size` tiles whose north-west tile is (z, x, y) as one
// image of (size * tile_size) pixels square, then encodes every tile with
// the Mapnik format string `format`. On success `*out` holds size*size
// buffers in x-major order (index = dx * size + dy).
int tp_mapnik_render_metatile(tp_mapnik_map *m, unsigned z, unsigned x, unsigned y,
                              unsigned size, unsigned tile_size, double scale,
                              char const *format, tp_mapnik_buffer **out, char **err) {
    *out = nullptr;
    return guarded(err, [&] {
        if (z > 30 || size == 0 || size > 8 || tile_size == 0 || tile_size > 4096) {
            throw std::invalid_argument("metatile parameters out of range");
        }
        unsigned long long const n = 1ULL << z;
        if (static_cast<unsigned long long>(x) + size > n ||
            static_cast<unsigned long long>(y) + size > n) {
            throw std::invalid_argument("metatile does not fit in the tile grid of its zoom");
        }
        double const tile_m = 2.0 * kMercHalf / static_cast<double>(n);
        double const minx = -kMercHalf + x * tile_m;
        double const maxy = kMercHalf - y * tile_m;
        mapnik::box2d<double> box(minx, maxy - size * tile_m, minx + size * tile_m, maxy);

        // The box is in spherical mercator metres, which is what any
        // spelling of EPSG:3857 uses as map units (as in mod_tile). A map in
        // lon/lat gets the box transformed into degrees.
        if (m->geographic) {
            mapnik::projection merc("epsg:3857");
            mapnik::projection map_proj(m->map.srs());
            mapnik::proj_transform tr(merc, map_proj);
            if (!tr.forward(box)) {
                throw std::runtime_error("cannot transform the tile box into the map's srs " +
                                         m->map.srs());
            }
        }

        unsigned const px = size * tile_size;
        m->map.resize(px, px);
        m->map.zoom_to_box(box);

        // Mapnik fills the whole image with a background colour, if any,
        // before drawing (and a background image on top of it).
        mapnik::image_rgba8 &im = canvas(px, static_cast<bool>(m->map.background()));
        mapnik::agg_renderer<mapnik::image_rgba8> ren(m->map, im, scale, 0u, 0u);
        ren.apply();
        mapnik::demultiply_alpha(im);

        std::string const fmt(format);
        size_t const count = static_cast<size_t>(size) * size;
        auto *bufs = static_cast<tp_mapnik_buffer *>(std::calloc(count, sizeof(tp_mapnik_buffer)));
        if (bufs == nullptr) {
            throw std::bad_alloc();
        }
        try {
            for (unsigned dx = 0; dx < size; ++dx) {
                for (unsigned dy = 0; dy < size; ++dy) {
                    mapnik::image_view<mapnik::image_rgba8> view(dx * tile_size, dy * tile_size,
                                                                 tile_size, tile_size, im);
                    std::string const data = mapnik::save_to_string(view, fmt);
                    tp_mapnik_buffer &b = bufs[static_cast<size_t>(dx) * size + dy];
                    b.data = static_cast<unsigned char *>(std::malloc(data.empty() ? 1 : data.size()));
                    if (b.data == nullptr) {
                        throw std::bad_alloc();
                    }
                    std::memcpy(b.data, data.data(), data.size());
                    b.len = data.size();
                }
            }
        } catch (...) {
            tp_mapnik_free_buffers(bufs, count);
            throw;
        }
        *out = bufs;
    });
}

}  // extern "C"
