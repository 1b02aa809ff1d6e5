-- tilepipe's flex prelude: the helper functions osm2pgsql 1.8 offers on
-- the `osm2pgsql` table (documented in osm2pgsql's manual, "Flex output":
-- define_*_table, has_prefix, has_suffix, clamp, trim, split_string,
-- split_unit, make_check_values_func, make_clean_tags_func,
-- way_member_ids, node_member_ids), written for tilepipe. Runs once per
-- Lua state, after the Rust side has created `osm2pgsql` with
-- define_table and before the user's config.

local o = osm2pgsql

local function define_typed_table(id_type, name, columns, options)
    local definition = options or {}
    definition.name = name
    definition.ids = { type = id_type, id_column = id_type .. '_id' }
    definition.columns = columns
    return o.define_table(definition)
end

function o.define_node_table(name, columns, options)
    return define_typed_table('node', name, columns, options)
end

function o.define_way_table(name, columns, options)
    return define_typed_table('way', name, columns, options)
end

function o.define_relation_table(name, columns, options)
    return define_typed_table('relation', name, columns, options)
end

function o.define_area_table(name, columns, options)
    return define_typed_table('area', name, columns, options)
end

function o.has_prefix(text, prefix)
    if text == nil then return nil end
    return string.sub(text, 1, #prefix) == prefix
end

function o.has_suffix(text, suffix)
    if text == nil then return nil end
    return suffix == '' or string.sub(text, -#suffix) == suffix
end

function o.clamp(value, low, high)
    if value == nil then return nil end
    return math.min(math.max(value, low), high)
end

function o.trim(text)
    if text == nil then return nil end
    return (string.gsub(text, '^%s*(.-)%s*$', '%1'))
end

function o.split_string(text, separator)
    local parts = {}
    if text ~= nil then
        for part in string.gmatch(text, '([^' .. (separator or ';') .. ']+)') do
            table.insert(parts, o.trim(part))
        end
    end
    return parts
end

function o.split_unit(text, default_unit)
    if text == nil then return nil end
    local number, unit = string.match(text, '^(-?[0-9.]+) ?(%a*)$')
    if number == nil then return nil end
    if unit == '' then unit = default_unit end
    return tonumber(number), unit
end

function o.make_check_values_func(values, default)
    local known = {}
    for _, value in ipairs(values) do known[value] = true end
    return function(value)
        if known[value] then return value end
        return default
    end
end

function o.make_clean_tags_func(keys)
    local exact, prefixes, suffixes = {}, {}, {}
    for _, key in ipairs(keys) do
        if string.sub(key, -1) == '*' then
            table.insert(prefixes, string.sub(key, 1, -2))
        elseif string.sub(key, 1, 1) == '*' then
            table.insert(suffixes, string.sub(key, 2))
        else
            table.insert(exact, key)
        end
    end
    local function matches(key)
        for _, prefix in ipairs(prefixes) do
            if o.has_prefix(key, prefix) then return true end
        end
        for _, suffix in ipairs(suffixes) do
            if o.has_suffix(key, suffix) then return true end
        end
        return false
    end
    return function(tags)
        for _, key in ipairs(exact) do tags[key] = nil end
        local doomed = {}
        for key in pairs(tags) do
            if matches(key) then table.insert(doomed, key) end
        end
        for _, key in ipairs(doomed) do tags[key] = nil end
        return next(tags) == nil
    end
end

local function member_ids(relation, kind)
    local ids = {}
    for _, member in ipairs(relation.members) do
        if member.type == kind then table.insert(ids, member.ref) end
    end
    return ids
end

function o.way_member_ids(relation) return member_ids(relation, 'w') end
function o.node_member_ids(relation) return member_ids(relation, 'n') end

-- The metatable of the objects handed to the process_* callbacks. The
-- Rust side adds get_bbox and the as_* constructors to its methods.
-- Attributes are nil unless the import keeps them; any other unknown
-- field is an error, as in osm2pgsql.
local methods = {}

function methods.grab_tag(object, key)
    if not key then error('Missing tag key', 2) end
    local value = object.tags[key]
    object.tags[key] = nil
    return value
end

local attributes = { version = true, timestamp = true, changeset = true, uid = true, user = true }

setmetatable(methods, {
    __index = function(_, key)
        if attributes[key] then return nil end
        error("unknown field '" .. tostring(key) .. "'", 2)
    end
})

return { __index = methods }
