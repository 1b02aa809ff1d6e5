-- tilepipe: a summary of the state a flex config keeps, so that an import
-- running process_node and process_way in several Lua states can tell
-- whether a callback changed it (src/apply/flex/workers.rs). Evaluated
-- once per state; returns the function that takes the summary.
--
-- The summary has one entry per root: each global (but the standard
-- libraries and `osm2pgsql`), each field of `osm2pgsql`, and each upvalue
-- of the functions in `osm2pgsql` (where configs keep their `local`
-- tables). An entry counts the values reachable from its root and sums a
-- number for each, in any order, so the same state gives the same summary
-- however the tables iterate.

local getupvalue = debug.getupvalue
local byte = string.byte
local next, type, tostring = next, type, tostring
local huge = math.huge

local libraries = {}
for _, name in ipairs({ 'string', 'table', 'math', 'os', 'io', 'coroutine',
                        'utf8', 'debug', 'package', '_G' }) do
    libraries[name] = true
end

local function scalar(value)
    local kind = type(value)
    if kind == 'number' then
        if value ~= value then return 1 end
        if value == huge or value == -huge then return 2 end
        return value % 1000003
    elseif kind == 'string' then
        return #value * 31 + (byte(value, 1) or 0) + (byte(value, -1) or 0) * 7
    elseif kind == 'boolean' then
        return value and 3 or 4
    end
    return 5
end

-- Visits `value` and everything reachable from it that `seen` has not
-- seen; returns the count and sum of what it visited.
local function visit(value, seen)
    local count, sum = 1, scalar(value)
    local kind = type(value)
    if (kind == 'table' or kind == 'function') and not seen[value] then
        seen[value] = true
        if kind == 'table' then
            for key, item in next, value do
                local c1, s1 = visit(key, seen)
                local c2, s2 = visit(item, seen)
                count = count + c1 + c2
                sum = (sum + s1 * 3 + s2) % 2147483647
            end
        else
            local index = 1
            while true do
                local name, item = getupvalue(value, index)
                if name == nil then break end
                local c, s = visit(item, seen)
                count = count + c
                sum = (sum + s * index) % 2147483647
                index = index + 1
            end
        end
    end
    return count, sum
end

return function()
    local summary = {}
    local function add(name, value)
        local count, sum = visit(value, {})
        summary[name] = tostring(count) .. ':' .. tostring(sum)
    end
    for name, value in next, _G do
        if type(name) ~= 'string' then
            add('a global with a ' .. type(name) .. ' key', value)
        elseif not libraries[name] and name ~= 'osm2pgsql' then
            add('the global ' .. name, value)
        end
    end
    for name, value in next, osm2pgsql do
        if type(value) == 'function' then
            local index = 1
            while true do
                local upvalue, item = getupvalue(value, index)
                if upvalue == nil then break end
                add("the local '" .. upvalue .. "' used by osm2pgsql." .. tostring(name), item)
                index = index + 1
            end
        else
            add('osm2pgsql.' .. tostring(name), value)
        end
    end
    return summary
end
