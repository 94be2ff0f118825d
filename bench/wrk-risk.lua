-- wrk script: valid marketing-risk requests, a different participant each
-- time, against `riskbatch sim`. The access token comes from SIM_TOKEN.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local path = "/wxa/servicemarket?access_token=" .. os.getenv("SIM_TOKEN")
local n = 0
request = function()
  n = n + 1
  local body = '{"service":"wxd8a88093cf541a77","api":"weopensecriskservice","data":{"openid":"oWrk'
    .. n .. '","serviceid":3,"sale_risk":{"mchcode":"mch1000","phonenum":"13800000000",'
    .. '"certid":"110101199003074512","wifibssid":"aa:bb:cc:dd:ee:ff","clientip":"10.2.3.4",'
    .. '"deviceid":"dev' .. n .. '"}},"client_msg_id":"wrk' .. n .. '"}'
  return wrk.format(nil, path, nil, body)
end
