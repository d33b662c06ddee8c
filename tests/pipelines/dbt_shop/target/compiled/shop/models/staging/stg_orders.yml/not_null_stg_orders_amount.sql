
    
    



select amount
from "test"."opsdata_try"."stg_orders"
where amount is null


