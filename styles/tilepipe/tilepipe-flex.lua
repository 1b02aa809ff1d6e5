-- tilepipe's own style over osm2pgsql's flex output: the tables and
-- columns tilepipe.xml reads (planet_osm_point, planet_osm_line,
-- planet_osm_roads, planet_osm_polygon), so the same Mapnik style draws a
-- database imported with either output:
--
--   tilepipe import -O flex -S styles/tilepipe/tilepipe-flex.lua FILE.osm.pbf
--
-- It also runs unchanged with osm2pgsql 1.8 and later:
--   osm2pgsql --slim -O flex -S styles/tilepipe/tilepipe-flex.lua FILE.osm.pbf

-- Tag columns every table has; the other tags go to the `tags` hstore.
local columns = {
    'access', 'admin_level', 'amenity', 'boundary', 'bridge', 'building', 'highway',
    'landuse', 'leisure', 'name', 'natural', 'place', 'railway', 'service', 'tunnel',
    'water', 'waterway',
}

local function table_columns(geometry_type)
    local list = {}
    for _, key in ipairs(columns) do
        table.insert(list, { column = key, type = 'text' })
    end
    table.insert(list, { column = 'layer', type = 'int4' })
    table.insert(list, { column = 'z_order', type = 'int4' })
    table.insert(list, { column = 'tags', type = 'hstore' })
    if geometry_type == 'geometry' then
        table.insert(list, { column = 'way_area', type = 'real' })
    end
    table.insert(list, { column = 'way', type = geometry_type, not_null = true })
    return list
end

local tables = {
    point = osm2pgsql.define_table{
        name = 'planet_osm_point',
        ids = { type = 'node', id_column = 'osm_id' },
        columns = table_columns('point'),
    },
    line = osm2pgsql.define_table{
        name = 'planet_osm_line',
        ids = { type = 'way', id_column = 'osm_id' },
        columns = table_columns('linestring'),
    },
    -- The major network, which the low zooms draw (as the classic
    -- output's roads table: a copy of those lines).
    roads = osm2pgsql.define_table{
        name = 'planet_osm_roads',
        ids = { type = 'way', id_column = 'osm_id' },
        columns = table_columns('linestring'),
    },
    polygon = osm2pgsql.define_table{
        name = 'planet_osm_polygon',
        ids = { type = 'area', id_column = 'osm_id' },
        columns = table_columns('geometry'),
    },
}

-- Tags that say nothing a map draws.
local clean_tags = osm2pgsql.make_clean_tags_func{
    'note', 'note:*', 'source', 'source:*', 'fixme', 'FIXME', 'created_by',
    'odbl', 'odbl:note', 'attribution', 'comment',
}

-- Keys that make a closed way an area unless area=no says otherwise.
local area_keys = {
    amenity = true, building = true, landuse = true, leisure = true,
    natural = true, place = true, water = true,
}

-- Road and railway drawing order, low to high (as osm2pgsql's classic
-- z_order: larger roads above smaller ones, layers ten apart).
local road_order = {
    motorway = 38, trunk = 37, primary = 36, secondary = 35, tertiary = 34,
    residential = 33, unclassified = 33, living_street = 33, road = 33,
    service = 32, pedestrian = 31, footway = 30, cycleway = 30, path = 30, track = 30,
}

-- Lines that also go to planet_osm_roads.
local major_roads = {
    motorway = true, motorway_link = true, trunk = true, trunk_link = true,
    primary = true, primary_link = true, secondary = true, secondary_link = true,
}

local function z_order(tags)
    local order = road_order[tags.highway] or 0
    if tags.railway then order = math.max(order, 35) end
    local layer = tonumber(tags.layer) or 0
    return osm2pgsql.clamp(layer, -10, 10) * 10 + order
end

-- The columns of a row: tag columns taken out of `tags`, the rest kept.
local function row_of(object)
    local tags = object.tags
    local row = { layer = tonumber(tags.layer), z_order = z_order(tags) }
    for _, key in ipairs(columns) do
        row[key] = object:grab_tag(key)
    end
    tags.layer = nil
    row.tags = tags
    return row
end

local function is_area(tags)
    if tags.area == 'no' then return false end
    if tags.area == 'yes' then return true end
    if tags.natural == 'coastline' then return false end
    if tags.waterway == 'riverbank' or tags.waterway == 'dock' then return true end
    for key in pairs(area_keys) do
        if tags[key] then return true end
    end
    return false
end

function osm2pgsql.process_node(object)
    if clean_tags(object.tags) then return end
    local row = row_of(object)
    row.way = object:as_point()
    tables.point:insert(row)
end

function osm2pgsql.process_way(object)
    if clean_tags(object.tags) then return end
    local area = object.is_closed and is_area(object.tags)
    local row = row_of(object)
    row.tags.area = nil
    if area then
        local polygon = object:as_polygon():transform(3857)
        row.way = polygon
        row.way_area = polygon:area()
        tables.polygon:insert(row)
    else
        -- Long lines are cut as osm2pgsql cuts them (100 km pieces).
        local major = major_roads[row.highway] or row.railway ~= nil
        for line in object:as_linestring():transform(3857):segmentize(100000):geometries() do
            row.way = line
            tables.line:insert(row)
            if major then
                tables.roads:insert(row)
            end
        end
    end
end

function osm2pgsql.process_relation(object)
    local kind = object.tags.type
    if kind ~= 'multipolygon' and kind ~= 'boundary' then return end
    if clean_tags(object.tags) then return end
    local row = row_of(object)
    row.tags.type = nil
    local area = object:as_multipolygon():transform(3857)
    row.way = area
    row.way_area = area:area()
    tables.polygon:insert(row)
end
